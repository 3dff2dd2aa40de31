"""Real stand-ins for outside services (an OpenAI-compatible server; a fake autoscaling cluster in
`tests.fakes.autoscaling_cluster`), shared by tests and benchmarks."""

from .openai_server import FakeBehaviour, FakeOpenAIServer, echo_reply

__all__ = ["FakeBehaviour", "FakeOpenAIServer", "echo_reply"]
