# stacklab as an image: `stacklab serve` with the built frontend, the
# static VMM and the guest kernel. It drives the host's Docker engine
# through its socket (mount /var/run/docker.sock) and boots micro-VMs on
# /dev/kvm when given (--device /dev/kvm). See compose.yaml and
# deploy/kubernetes/.
#
# Build: docker build -t stacklab .   (needs a registry for the two base
# images.) Without a registry, deploy/build-images makes the image
# compose.yaml runs (stacklab/stacklab:deploy) from the already built
# binaries on a Debian base made with debootstrap; that is what the
# reference host and its CI build and run.

# --- build: the same toolchain `./dev install` sets up -------------------
FROM rust:1.88-bookworm AS build
RUN rustup target add wasm32-unknown-unknown x86_64-unknown-none x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends npm musl-tools \
 && npm install -g binaryen@132 \
 && cargo install trunk --version 0.21.14 --locked \
 && cargo install wasm-bindgen-cli --version 0.2.130
WORKDIR /src
COPY . .
RUN trunk build --release \
 && cargo build --release -p stacklab-server \
 && cargo build --release -p stacklab-vmm --target x86_64-unknown-linux-musl \
 && cargo build -p stacklab-guest --profile guest --target x86_64-unknown-none

# --- run: Debian slim, the binaries and the frontend ---------------------
FROM debian:bookworm-slim
RUN useradd --system --no-create-home --shell /usr/sbin/nologin stacklab-vmm
COPY --from=build /src/target/release/stacklab /usr/local/bin/stacklab
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/stacklab-vmm /usr/local/lib/stacklab/stacklab-vmm
COPY --from=build /src/target/x86_64-unknown-none/guest/stacklab-guest /usr/local/lib/stacklab/stacklab-guest
COPY --from=build /src/frontend/dist /usr/local/share/stacklab/dist
ENV STACKLAB_STATIC_DIR=/usr/local/share/stacklab/dist \
    STACKLAB_VMM_BIN=/usr/local/lib/stacklab/stacklab-vmm \
    STACKLAB_GUEST_IMAGE=/usr/local/lib/stacklab/stacklab-guest \
    STACKLAB_DATA_DIR=/var/lib/stacklab \
    STACKLAB_ADDR=0.0.0.0:8080
VOLUME /var/lib/stacklab
EXPOSE 8080
# Root in the container: the VMM's jail needs it to set itself up (it then
# drops to stacklab-vmm), and the Docker socket is root's.
ENTRYPOINT ["/usr/local/bin/stacklab"]
CMD ["serve"]
