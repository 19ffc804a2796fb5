# Tasklane container image: `docker build -t tasklane .` from the repository root.
# See docs/production.md ("Container image") for running it.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tasklane \
 && install -m 0755 target/release/tasklane /usr/local/bin/tasklane

FROM debian:bookworm-slim
# A fixed, unprivileged uid that owns the database volume.
RUN groupadd --system --gid 10001 tasklane \
 && useradd --system --uid 10001 --gid tasklane --home-dir /var/lib/tasklane --no-create-home tasklane \
 && mkdir -p /var/lib/tasklane \
 && chown tasklane:tasklane /var/lib/tasklane
COPY --from=build /usr/local/bin/tasklane /usr/local/bin/tasklane
USER tasklane:tasklane
WORKDIR /var/lib/tasklane
VOLUME ["/var/lib/tasklane"]
# Listening beyond loopback requires token mode; create tokens with
# `docker exec <container> tasklane token create --role operator --name <name>`.
ENV TASKLANE_DATABASE_URL=sqlite:///var/lib/tasklane/tasklane.db \
    TASKLANE_LISTEN=0.0.0.0:7480 \
    TASKLANE_AUTH=token \
    TASKLANE_LOG_FORMAT=json
EXPOSE 7480
STOPSIGNAL SIGTERM
ENTRYPOINT ["tasklane"]
CMD ["serve"]
