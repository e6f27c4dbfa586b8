// Command etcd is the upstream etcd server at the version a k8s.io/kubernetes release uses (go.mod: v1.36.3;
// etcd-v3.7.0.mod, built with go build -modfile: v1.37.2).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
