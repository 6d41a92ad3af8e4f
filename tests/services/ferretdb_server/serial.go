package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// FerretDB v1 runs an update as a query, then applies the operators in Go and writes the whole
// document back, with nothing held in between: two concurrent {$inc: {n: 1}} on one document
// can both read n=0 and both write 1. MongoDB applies each single-document update atomically.
// Handing FerretDB one request at a time, and waiting for its reply before the next, gives
// the tests a server that keeps that guarantee (at the price of concurrency the tests do not
// need).

// maxMessage bounds what the proxy reads: MongoDB's own limit is 48 MB.
const maxMessage = 48 << 20

// opMsg is OP_MSG's opCode; bit 1 of its flagBits is moreToCome.
const (
	opMsg      = 2013
	moreToCome = 1 << 1
)

// serial serializes requests: one request and its replies at a time, across connections.
var serial sync.Mutex

// serveOneAtATime accepts clients on ln and relays each to FerretDB's Unix socket at backend,
// until ln is closed.
func serveOneAtATime(ln net.Listener, backend string, logger *slog.Logger) {
	for {
		client, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logger.Error("accept failed", "error", err)
			}

			return
		}

		go relay(client, backend, logger)
	}
}

// relay passes one client's requests to its own FerretDB connection, one exchange at a time.
func relay(client net.Conn, backend string, logger *slog.Logger) {
	defer client.Close()

	server, err := net.Dial("unix", backend)
	if err != nil {
		logger.Error("cannot reach FerretDB", "error", err)
		return
	}
	defer server.Close()

	for {
		request, err := readMessage(client)
		if err != nil {
			return // the client closed its connection, or sent something that is not a message
		}

		if err := exchange(request, server, client); err != nil {
			return
		}
	}
}

// exchange sends one request and relays its replies (none when the client said moreToCome;
// several while FerretDB says moreToCome), holding the lock throughout.
func exchange(request []byte, server, client net.Conn) error {
	serial.Lock()
	defer serial.Unlock()

	if _, err := server.Write(request); err != nil {
		return err
	}

	if hasMoreToCome(request) {
		return nil
	}

	for {
		reply, err := readMessage(server)
		if err != nil {
			return err
		}

		if _, err := client.Write(reply); err != nil {
			return err
		}

		if !hasMoreToCome(reply) {
			return nil
		}
	}
}

// readMessage reads one wire-protocol message: a little-endian int32 length, which counts
// itself and the rest of the 16-byte header, then the body.
func readMessage(r io.Reader) ([]byte, error) {
	var header [16]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}

	size := binary.LittleEndian.Uint32(header[:4])
	if size < uint32(len(header)) || size > maxMessage {
		return nil, fmt.Errorf("message of %d bytes", size)
	}

	message := make([]byte, size)
	copy(message, header[:])

	if _, err := io.ReadFull(r, message[len(header):]); err != nil {
		return nil, err
	}

	return message, nil
}

// hasMoreToCome tells an OP_MSG whose flagBits carry moreToCome.
func hasMoreToCome(message []byte) bool {
	return len(message) >= 20 &&
		binary.LittleEndian.Uint32(message[12:16]) == opMsg &&
		binary.LittleEndian.Uint32(message[16:20])&moreToCome != 0
}
