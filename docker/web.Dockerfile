# The reference app (web/): the page, onnxruntime-web from npm, and a read-only server of the outputs volume.
# Build from the repository root: docker build -f docker/web.Dockerfile -t lenet-mnist-web .
ARG NODE_IMAGE=node:20-bookworm-slim
FROM ${NODE_IMAGE}
ENV NODE_ENV=production NPM_CONFIG_UPDATE_NOTIFIER=false
WORKDIR /app/web
# The pinned packages first, in their own layer: a change to the page does not reinstall them.
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force
COPY web/index.html web/app.js web/preprocess.js web/onnx-metadata.js web/style.css web/serve.mjs ./
USER 10001:10001
EXPOSE 8080
# 0.0.0.0 inside the container; compose publishes the port on the host's 127.0.0.1 only.
CMD ["node", "serve.mjs", "--host", "0.0.0.0", "--port", "8080", "--outputs", "/outputs"]
