// Command etcd runs a one-member etcd for a throwaway kube-apiserver: data in
// a directory, client and peer URLs on 127.0.0.1, nothing else. It prints
// "etcd ready" once it serves, and stops on SIGTERM or SIGINT.
//
//	etcd DATA_DIR CLIENT_PORT PEER_PORT
//
// go.etcd.io/etcd/server/v3 is the version k8s.io/kubernetes itself
// requires (go.mod), embedded rather than built from etcd's own main
// package, which would add etcd's whole command-line module for nothing.
package main

import (
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func loopback(port string) url.URL {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		log.Fatalf("port %q: %v", port, err)
	}
	return url.URL{Scheme: "http", Host: "127.0.0.1:" + port}
}

func main() {
	if len(os.Args) != 4 {
		log.Fatalf("usage: %s DATA_DIR CLIENT_PORT PEER_PORT", os.Args[0])
	}
	client, peer := loopback(os.Args[2]), loopback(os.Args[3])
	cfg := embed.NewConfig()
	cfg.Dir = os.Args[1]
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "warn"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	fmt.Println("etcd ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-e.Err():
		log.Print(err)
	}
}
