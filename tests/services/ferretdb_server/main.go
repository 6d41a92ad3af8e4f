// Command ferretdb-server runs FerretDB v1 (MongoDB wire protocol over SQLite) for the tests.
//
// It embeds FerretDB through its github.com/FerretDB/FerretDB/ferretdb package rather than
// building cmd/ferretdb: that command panics unless build/version/version.txt was generated,
// while the embedded package skips those checks because this module is the main one.
//
// Usage:
//
//	ferretdb-server -listen 127.0.0.1:27017 -data /path/to/dir
//
// It serves until SIGTERM or SIGINT, then closes the listener, waits for connections
// (FerretDB gives clients a few seconds) and closes the SQLite databases.
//
// Clients reach FerretDB through a proxy in this program that hands it one request at a time
// (see serial.go): MongoDB applies each update to one document atomically, FerretDB v1 does
// not, and the contract tests check that guarantee.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (loopback only)")
	data := flag.String("data", "", "directory for the SQLite files (created if missing)")
	level := flag.String("log-level", "info", "log level: debug, info, warn or error")
	flag.Parse()

	if err := run(*listen, *data, *level); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb-server: %s\n", err)
		os.Exit(1)
	}
}

func run(listen, data, level string) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(logger)

	if err := checkLoopback(listen); err != nil {
		return err
	}

	sqliteURL, err := sqliteDir(data)
	if err != nil {
		return err
	}

	sockets, err := os.MkdirTemp("", "ferretdb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sockets)

	backend := filepath.Join(sockets, "ferretdb.sock")

	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{Unix: backend},
		Logger:   logger,
		Handler:  "sqlite",

		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	go func() {
		<-ctx.Done()
		logger.Info("signal received, shutting down")
		stop() // a second signal kills the process the default way
	}()

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}

	go func() {
		<-ctx.Done()
		ln.Close()
	}()

	go serveOneAtATime(ln, backend, logger)

	logger.Info("ferretdb-server starting", "listen", listen, "sqlite", sqliteURL)

	if err := f.Run(ctx); err != nil {
		return err
	}

	logger.Info("ferretdb-server stopped")

	return nil
}

// checkLoopback refuses addresses other than loopback: test servers must not be reachable
// from outside the machine.
func checkLoopback(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}

	if host == "localhost" {
		return nil
	}

	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: only loopback addresses are allowed", listen)
	}

	return nil
}

// sqliteDir creates the data directory and returns it as the "file:" URI FerretDB expects
// (absolute, ending with "/", special characters escaped).
func sqliteDir(data string) (string, error) {
	if data == "" {
		return "", fmt.Errorf("-data is required")
	}

	dir, err := filepath.Abs(data)
	if err != nil {
		return "", fmt.Errorf("-data %q: %w", data, err)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("-data %q: %w", data, err)
	}

	if !strings.HasSuffix(dir, "/") {
		dir += "/"
	}

	u := url.URL{Scheme: "file", Path: dir}

	return u.String(), nil
}
