# syntax=docker/dockerfile:1
# Multi-stage: build with the dev toolchain, run with production dependencies only, as a non-root user.
FROM node:20-bookworm-slim AS build
# The native splice relay (src/native, built by npm's install script through node-gyp) needs a C toolchain;
# the image's own Node headers are used (npm_config_nodedir), so nothing is downloaded to build it.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json binding.gyp ./
COPY src ./src
COPY bin ./bin
RUN npm ci --no-audit --no-fund && npm prune --omit=dev && test -f build/Release/splice_relay.node

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/splice_relay.node ./build/Release/splice_relay.node
COPY bin ./bin
COPY package.json ./
COPY policies ./policies
RUN mkdir -p /app/certs /app/policy && chown -R node:node /app/certs /app/policy \
 && cp /app/policies/default.json /app/policy/policy.json && chown node:node /app/policy/policy.json
USER node
# 3128: proxy listener · 9090: admin REST (bind it to loopback or give it a token: see README)
EXPOSE 3128 9090
VOLUME ["/app/certs", "/app/policy"]
HEALTHCHECK --interval=10s --timeout=3s CMD node -e "fetch('http://127.0.0.1:9090/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "/app/bin/sandbox-egress.js"]
CMD ["proxy", "--listen", "0.0.0.0:3128", "--admin", "127.0.0.1:9090", "--policy-file", "/app/policy/policy.json", "--ca-dir", "/app/certs"]
