package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// newTracerProvider returns an OpenTelemetry tracer provider exporting to
// OTLP/HTTP, or nil if tracing is off (no endpoint in the config or in the
// standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables, which the
// exporter also reads for headers, TLS and timeouts).
func newTracerProvider(ctx context.Context, cfg tracingConfig, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	if cfg.OTLPEndpoint == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	var opts []otlptracehttp.Option
	if cfg.OTLPEndpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(cfg.OTLPEndpoint))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("modgate"))),
	)
	log.Info("tracing to OTLP", "endpoint", cfg.OTLPEndpoint, "sample_ratio", ratio)
	return tp, nil
}
