# syntax=docker/dockerfile:1.7
# The example chat app (examples/chat-app), the upstream of the example hub in kind
# (examples/chat-app/k8s/app.yaml).
#
#   docker build -f docker/chat-app.Dockerfile -t roomcast/chat-app:dev .
#
# Build context: the repository root. Runs as the unprivileged `node` user (1000) and writes
# nothing to its root filesystem.
FROM node:20-bookworm-slim
WORKDIR /app
COPY examples/chat-app/package.json examples/chat-app/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY examples/chat-app/server.mjs ./
COPY examples/chat-app/public ./public
USER 1000:1000
ENV HOST=0.0.0.0 PORT=8080 NODE_ENV=production
EXPOSE 8080
CMD ["node", "server.mjs"]
