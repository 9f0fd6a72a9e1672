// Wrapper module that only builds Traefik (hack/build-binaries.sh). Traefik's go.mod has
// `replace` lines, which `go install pkg@version` refuses, so they are copied here.
// v3.6.12, not the newest v3.7.x: the Go module proxy here refuses 29 of v3.7's dependency
// versions (see /work/shared/notes/peers.md). Bump: the require and the three replaces, from the
// new version's go.mod (`go mod download -json github.com/traefik/traefik/v3@vX` → GoMod).
module modeldeploy.io/hack/gomod/traefik

go 1.25.0

require github.com/traefik/traefik/v3 v3.6.12

replace (
	github.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
	github.com/mailgun/minheap => github.com/containous/minheap v0.0.0-20190809180810-6e71eb837595
)

// From Traefik's own go.mod (an ambiguous import otherwise).
exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
