# The modgate image for the mesh (docker-compose.yml): one static binary.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/modgate ./cmd/modgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --home /var/cache/modgate modgate \
	&& mkdir -p /var/cache/modgate && chown modgate /var/cache/modgate
COPY --from=build /out/modgate /usr/local/bin/modgate
USER modgate
ENTRYPOINT ["/usr/local/bin/modgate"]
