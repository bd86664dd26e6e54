# syntax=docker/dockerfile:1.7
# The sio-chat example (examples/sio-chat), the application of the hub of
# examples/sio-chat/k8s/hub.yaml (examples/sio-chat/k8s/app.yaml).
#
#   docker build -f docker/sio-chat.Dockerfile -t roomcast/sio-chat:dev .
#
# Build context: the repository root. The SDK (sdk/node) is built in a first stage and
# installed into the example as a copy, as `npm ci` does from the checkout. Runs as the
# unprivileged `node` user (1000) and writes nothing to its root filesystem.
FROM node:20-bookworm-slim AS sdk
WORKDIR /src/sdk/node
COPY sdk/node/package.json sdk/node/package-lock.json sdk/node/tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY sdk/node/src ./src
COPY sdk/node/proto ./proto
COPY sdk/node/README.md ./
RUN npm run build

FROM node:20-bookworm-slim
COPY --from=sdk /src/sdk/node /src/sdk/node
WORKDIR /src/examples/sio-chat
COPY examples/sio-chat/package.json examples/sio-chat/package-lock.json examples/sio-chat/.npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && rm -rf /src/sdk/node/node_modules
COPY examples/sio-chat/server.mjs ./
COPY examples/sio-chat/public ./public
USER 1000:1000
ENV HOST=0.0.0.0 PORT=8080 NODE_ENV=production
EXPOSE 8080
CMD ["node", "server.mjs"]
