# Images for the Helm chart: `--target proxy` (ghcr.io/tollgate-dev/tollgate-proxy) and
# `--target operator` (ghcr.io/tollgate-dev/tollgate-operator).
#
#   docker build --target proxy -t ghcr.io/tollgate-dev/tollgate-proxy:0.1.0 .
#   docker build --target operator -t ghcr.io/tollgate-dev/tollgate-operator:0.1.0 .
#
# Both binaries are self-contained: TLS roots (webpki-roots) and the time-zone database are
# compiled in, so the runtime is distroless with no CA bundle or tzdata. They run as the
# distroless nonroot user (65532), which the chart's securityContext expects.

FROM rust:1.89-bookworm AS build
# The source revision in `tollgate_build_info{revision}` (e.g. --build-arg TOLLGATE_REVISION=$(git rev-parse --short HEAD)).
ARG TOLLGATE_REVISION=""
ENV TOLLGATE_REVISION=${TOLLGATE_REVISION}
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p tollgate-dataplane --bin tollgate-proxy \
      -p tollgate-operator --bin tollgate-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS proxy
COPY --from=build /src/target/release/tollgate-proxy /usr/local/bin/tollgate-proxy
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tollgate-proxy"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /src/target/release/tollgate-operator /usr/local/bin/tollgate-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tollgate-operator"]
