// Command etcd is a single-member etcd for the FerroLB test control plane: a thin main around
// go.etcd.io/etcd/server/v3/embed, so it is built from the same pinned module graph as
// kube-apiserver (the etcd version Kubernetes v1.36 itself requires).
//
// It listens on plain-HTTP loopback URLs given by flags (the lab runs it inside the control
// plane's network namespace, where only kube-apiserver can reach it), keeps its data in
// --data-dir, and shuts down cleanly on SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	name := flag.String("name", "ferrolb", "member name")
	dataDir := flag.String("data-dir", "", "data directory (required)")
	clientURL := flag.String("listen-client-url", "http://127.0.0.1:2379", "client URL to listen on and advertise")
	peerURL := flag.String("listen-peer-url", "http://127.0.0.1:2380", "peer URL to listen on and advertise")
	metricsURL := flag.String("listen-metrics-url", "", "optional metrics/health URL")
	noFsync := flag.Bool("unsafe-no-fsync", true, "skip fsync: the data is throwaway test state")
	logLevel := flag.String("log-level", "warn", "zap log level")
	flag.Parse()

	if err := run(*name, *dataDir, *clientURL, *peerURL, *metricsURL, *noFsync, *logLevel); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		os.Exit(1)
	}
}

func parseURL(flagName, raw string) (url.URL, error) {
	parsed, err := url.Parse(raw)
	if err != nil {
		return url.URL{}, fmt.Errorf("--%s %q: %w", flagName, raw, err)
	}
	return *parsed, nil
}

func run(name, dataDir, clientURL, peerURL, metricsURL string, noFsync bool, logLevel string) error {
	if dataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	client, err := parseURL("listen-client-url", clientURL)
	if err != nil {
		return err
	}
	peer, err := parseURL("listen-peer-url", peerURL)
	if err != nil {
		return err
	}

	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(name)
	cfg.UnsafeNoFsync = noFsync
	cfg.Logger = "zap"
	cfg.LogLevel = logLevel
	cfg.LogOutputs = []string{"stderr"}
	if metricsURL != "" {
		metrics, err := parseURL("listen-metrics-url", metricsURL)
		if err != nil {
			return err
		}
		cfg.ListenMetricsUrls = []url.URL{metrics}
	}

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer server.Close()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	select {
	case <-server.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", client.String())
	case <-time.After(60 * time.Second):
		server.Server.Stop()
		return fmt.Errorf("not ready after 60s")
	case sig := <-signals:
		fmt.Fprintf(os.Stderr, "etcd: %v before ready, stopping\n", sig)
		return nil
	}

	select {
	case err := <-server.Err():
		return fmt.Errorf("serve: %w", err)
	case sig := <-signals:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", sig)
		return nil
	}
}
