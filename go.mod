module github.com/modgate/modgate

go 1.26.0

require (
	github.com/coocood/freecache v1.2.7
	golang.org/x/mod v0.42.0
	golang.org/x/time v0.16.0
	golang.org/x/tools v0.52.0
	gopkg.in/yaml.v3 v3.0.1
)

require github.com/cespare/xxhash/v2 v2.1.2 // indirect
