package bpf

// The generated files (redirect_bpfel.go, redirect_bpfel.o) are committed,
// so building modgate needs no clang. `make generate` remakes them (it
// sets BPF_CFLAGS, including the architecture's asm headers, and installs
// clang and libbpf-dev if missing); CI fails if they differ from what is
// committed.
//
//go:generate go tool bpf2go -cc clang -target bpfel -type settings redirect redirect.c
