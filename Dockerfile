# syntax=docker/dockerfile:1
# Build: the Rust version the code needs (rust-version in Cargo.toml).
FROM rust:1.94-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migration ./migration
COPY src ./src
COPY assets ./assets
RUN cargo build --release --locked --bin attendance \
 && strip target/release/attendance

# Run: a small image, a non-root user, data in a volume.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data attendance \
 && mkdir -p /data && chown attendance /data
COPY --from=build /src/target/release/attendance /usr/local/bin/attendance
USER attendance
WORKDIR /data
ENV BIND=0.0.0.0:8000 \
    DATABASE_URL=sqlite:////data/attendance.db
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["attendance", "healthcheck"]
ENTRYPOINT ["attendance"]
CMD ["serve"]
