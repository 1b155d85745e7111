// A Go program with two kinds of CPU work, about half the time each, profiled with runtime/pprof:
// a checksum loop in its own code, and encoding/json marshalling a slice of records.
// Usage: go run main.go OUT.pprof SECONDS
package main

import (
	"encoding/json"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

type record struct {
	ID    int               `json:"id"`
	SKU   string            `json:"sku"`
	Tags  []string          `json:"tags"`
	Stock map[string]int    `json:"stock"`
	Attrs map[string]string `json:"attrs"`
}

func checksum(data []byte, rounds int) uint32 {
	var h uint32
	for r := 0; r < rounds; r++ {
		for _, b := range data {
			h = h*31 + uint32(b)
		}
	}
	return h
}

func encodeReport(records []record) int {
	b, err := json.Marshal(records)
	if err != nil {
		panic(err)
	}
	return len(b)
}

func main() {
	out, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	seconds, _ := strconv.Atoi(os.Args[2])
	records := make([]record, 2000)
	for i := range records {
		records[i] = record{ID: i, SKU: "SKU-" + strconv.Itoa(i), Tags: []string{"a", "b", strconv.Itoa(i % 7)},
			Stock: map[string]int{"eu": i % 13, "us": i % 17}, Attrs: map[string]string{"color": "red"}}
	}
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		panic(err)
	}
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	var sink uint64
	for time.Now().Before(end) {
		t := time.Now()
		for time.Since(t) < 20*time.Millisecond {
			sink += uint64(checksum(data, 4))
		}
		t = time.Now()
		for time.Since(t) < 20*time.Millisecond {
			sink += uint64(encodeReport(records))
		}
	}
	pprof.StopCPUProfile()
	out.Close()
	if sink == 0 {
		os.Exit(1)
	}
}
