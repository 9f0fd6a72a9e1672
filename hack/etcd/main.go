// Command etcd is the upstream etcd server, built from its Go module.
// go.etcd.io/etcd/server/v3 cannot be 'go install'ed directly (replace lines in its go.mod),
// so this wrapper module imports its entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
