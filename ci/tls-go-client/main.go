// A ClickHouse native-protocol client over Go's crypto/tls (standard library only), for the
// TLS checks (ci/accept/tls.py): its plaintext is read by the uprobes on
// crypto/tls.(*Conn).Write and Read. Built by ci/tls-go-client.sh.
//
//	tls-go-client HOST PORT QUERY_ID_PREFIX N [START_DELAY_MS]
//	    N queries on one connection (the mix of ci/tls-static-client.c: small SELECTs, a
//	    1,000-row result, a failing query), query ids PREFIX-0 .. PREFIX-N-1; prints
//	    {"ok": .., "60": ..}.
//	tls-go-client --loop HOST PORT
//	    queries without pause until stdin closes, checking every answer
//	    (SELECT i + 1, a string of i % 5000 'x'); prints {"answered": ..}. Exits 1 at the
//	    first wrong or failed answer.
//	tls-go-client --bench [--plain] --target HOST:PORT --connections N --duration 3s
//	    SELECT 1 flat out on N connections, over TLS (or plaintext: the same client for
//	    ci/bench.sh's TLS row and its plaintext twin); prints the load generator's JSON line
//	    (l7tap-loadgen's LoadReport: throughput, latency quantiles).
//	tls-go-client --hold
//	    does nothing until SIGINT or SIGTERM: keeps the binary mapped, so that a capture
//	    started meanwhile attaches it in its first scan (ci/bench.sh).
//
// Uncompressed; client revision 54060. Exits 1 on anything it does not understand.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const revision = 54060

type client struct {
	conn net.Conn // a *tls.Conn, or a *net.TCPConn for --bench --plain
	r    *bufio.Reader
	w    []byte
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tls-go-client: "+format+"\n", args...)
	os.Exit(1)
}

func (c *client) varint(v uint64) {
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b |= 0x80
		}
		c.w = append(c.w, b)
		if v == 0 {
			return
		}
	}
}

func (c *client) str(s string) { c.varint(uint64(len(s))); c.w = append(c.w, s...) }

func (c *client) flush() {
	if _, err := c.conn.Write(c.w); err != nil {
		die("write: %v", err)
	}
	c.w = c.w[:0]
}

func (c *client) u8() byte {
	b, err := c.r.ReadByte()
	if err != nil {
		die("read: %v", err)
	}
	return b
}

func (c *client) getVarint() uint64 {
	v, err := binary.ReadUvarint(c.r)
	if err != nil {
		die("read: %v", err)
	}
	return v
}

func (c *client) bytes(n uint64) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		die("read: %v", err)
	}
	return b
}

func (c *client) getStr() string { return string(c.bytes(c.getVarint())) }

// block reads a Data/Totals/Extremes block: its columns' values as text (fixed-width
// integers and String only).
func (c *client) block() [][]string {
	c.getStr() // temporary table name
	for {      // block info
		switch field := c.getVarint(); field {
		case 0:
			goto columns
		case 1:
			c.bytes(1)
		case 2:
			c.bytes(4)
		default:
			die("unknown block info field %d", field)
		}
	}
columns:
	ncols, nrows := c.getVarint(), c.getVarint()
	cols := make([][]string, ncols)
	for i := range cols {
		c.getStr() // name
		typ := c.getStr()
		for r := uint64(0); r < nrows; r++ {
			var v string
			switch typ {
			case "UInt8":
				v = strconv.FormatUint(uint64(c.u8()), 10)
			case "UInt16":
				v = strconv.FormatUint(uint64(binary.LittleEndian.Uint16(c.bytes(2))), 10)
			case "UInt32":
				v = strconv.FormatUint(uint64(binary.LittleEndian.Uint32(c.bytes(4))), 10)
			case "UInt64":
				v = strconv.FormatUint(binary.LittleEndian.Uint64(c.bytes(8)), 10)
			case "String":
				v = c.getStr()
			default:
				die("unsupported column type %q", typ)
			}
			cols[i] = append(cols[i], v)
		}
	}
	return cols
}

func (c *client) emptyBlock() {
	c.varint(2) // Data
	c.str("")   // table name
	c.varint(1) // block info: is_overflows
	c.w = append(c.w, 0)
	c.varint(2) // bucket_num = -1
	c.w = append(c.w, 0xff, 0xff, 0xff, 0xff)
	c.varint(0)
	c.varint(0) // columns
	c.varint(0) // rows
}

// query sends one query and reads its answer: the rows of its Data blocks, and 0 if it
// ended well, else the exception's code.
func (c *client) query(sql, queryID string) ([][]string, int32) {
	c.varint(1) // Query
	c.str(queryID)
	c.w = append(c.w, 1) // client info: initial query
	c.str("")            // initial user
	c.str("")            // initial query id
	c.str("[::ffff:127.0.0.1]:0")
	c.w = append(c.w, 1) // interface: TCP
	c.str("l7tap")
	c.str("localhost")
	c.str("tls-go-client")
	c.varint(18)
	c.varint(16)
	c.varint(revision)
	c.str("")   // quota key
	c.str("")   // end of settings
	c.varint(2) // stage: complete
	c.varint(0) // no compression
	c.str(sql)
	c.emptyBlock()
	c.flush()
	var rows [][]string
	for {
		switch packet := c.getVarint(); packet {
		case 1, 7, 8: // Data, Totals, Extremes
			cols := c.block()
			if packet == 1 && len(cols) > 0 {
				for r := range cols[0] {
					row := make([]string, len(cols))
					for i := range cols {
						row[i] = cols[i][r]
					}
					rows = append(rows, row)
				}
			}
		case 2: // Exception
			code := int32(0)
			for {
				c0 := int32(binary.LittleEndian.Uint32(c.bytes(4)))
				if code == 0 {
					code = c0
				}
				c.getStr()
				c.getStr()
				c.getStr()
				if c.u8() == 0 {
					return nil, code
				}
			}
		case 3: // Progress: rows, bytes, total rows
			c.getVarint()
			c.getVarint()
			c.getVarint()
		case 5: // EndOfStream
			return rows, 0
		case 6: // ProfileInfo
			c.getVarint()
			c.getVarint()
			c.getVarint()
			c.u8()
			c.getVarint()
			c.u8()
		default:
			die("unexpected server packet %d", packet)
		}
	}
}

func connect(host, port string) *client {
	return connectTo(net.JoinHostPort(host, port), true)
}

func connectTo(target string, secure bool) *client {
	conn, err := net.Dial("tcp", target)
	if err != nil {
		die("connect: %v", err)
	}
	if secure {
		// The test bed's certificate is self-signed.
		tlsConn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		if err := tlsConn.Handshake(); err != nil {
			die("TLS handshake: %v", err)
		}
		conn = tlsConn
	}
	c := &client{conn: conn, r: bufio.NewReaderSize(conn, 1<<16)}
	c.varint(0) // Hello
	c.str("tls-go-client")
	c.varint(18)
	c.varint(16)
	c.varint(revision)
	c.str("default")
	c.str("default")
	c.str("")
	c.flush()
	switch packet := c.getVarint(); packet {
	case 0:
	case 2:
		die("the server refused the Hello")
	default:
		die("no server Hello (packet %d)", packet)
	}
	c.getStr()    // server name
	c.getVarint() // major
	c.getVarint() // minor
	c.getVarint() // revision
	c.getStr()    // time zone (revision >= 54058)
	return c
}

func sqlOf(i int) string {
	switch i % 10 {
	case 3:
		return "SELECT * FROM l7tap.no_such_table" // code 60
	case 7: // uncompressed: small enough not to be cut (see ci/accept/tls.py)
		return "SELECT number, toString(number) FROM system.numbers LIMIT 1000"
	}
	return fmt.Sprintf("SELECT %d, 'tls'", i)
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--hold" {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		<-stop
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "--bench" {
		bench(os.Args[2:])
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "--loop" {
		loop(os.Args[2], os.Args[3])
		return
	}
	if len(os.Args) != 5 && len(os.Args) != 6 {
		die("usage: tls-go-client HOST PORT QUERY_ID_PREFIX N [START_DELAY_MS] | --loop HOST PORT")
	}
	n, err := strconv.Atoi(os.Args[4])
	if err != nil {
		die("N: %v", err)
	}
	if len(os.Args) == 6 { // a wait before connecting (for a capture's scan to find this binary)
		ms, err := strconv.Atoi(os.Args[5])
		if err != nil {
			die("START_DELAY_MS: %v", err)
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	c := connect(os.Args[1], os.Args[2])
	ok, failed60 := 0, 0
	for i := 0; i < n; i++ {
		rows, code := c.query(sqlOf(i), fmt.Sprintf("%s-%d", os.Args[3], i))
		switch {
		case code == 60:
			failed60++
		case code != 0:
			die("query %d: exception code %d", i, code)
		case i%10 == 7 && len(rows) != 1000:
			die("query %d: %d rows, 1000 expected", i, len(rows))
		case i%10 != 7 && (len(rows) != 1 || rows[0][0] != strconv.Itoa(i) || rows[0][1] != "tls"):
			die("query %d: wrong answer %v", i, rows)
		default:
			ok++
		}
	}
	c.conn.Close()
	fmt.Printf("{\"ok\": %d, \"60\": %d}\n", ok, failed60)
}

// loop queries until stdin closes; every answer is checked.
func loop(host, port string) {
	var done int32
	go func() {
		io.Copy(io.Discard, os.Stdin)
		atomic.StoreInt32(&done, 1)
	}()
	c := connect(host, port)
	answered := 0
	for i := 0; atomic.LoadInt32(&done) == 0; i++ {
		sql := fmt.Sprintf("SELECT toUInt64(%d) + 1, arrayStringConcat(arrayMap(x -> 'x', range(%d)))", i, i%5000)
		rows, code := c.query(sql, "")
		if code != 0 || len(rows) != 1 || rows[0][0] != strconv.Itoa(i+1) || rows[0][1] != strings.Repeat("x", i%5000) {
			die("query %d: wrong answer (code %d, %d rows)", i, code, len(rows))
		}
		answered++
	}
	c.conn.Close()
	fmt.Printf("{\"answered\": %d}\n", answered)
}

// benchReport is l7tap-loadgen's LoadReport (tools/loadgen/src/report.rs).
type benchReport struct {
	Workload    string   `json:"workload"`
	Target      string   `json:"target"`
	Connections int      `json:"connections"`
	Rate        *float64 `json:"rate"`
	InFlight    int      `json:"in_flight"`
	DurationS   float64  `json:"duration_s"`
	Throughput  float64  `json:"throughput"`
	Sent        uint64   `json:"sent"`
	Ok          uint64   `json:"ok"`
	Failed      uint64   `json:"failed"`
	P50us       float64  `json:"p50_us"`
	P99us       float64  `json:"p99_us"`
	P999us      float64  `json:"p999_us"`
	MaxUs       float64  `json:"max_us"`
}

// bench runs SELECT 1 flat out on each connection for the duration.
func bench(args []string) {
	fs := flag.NewFlagSet("--bench", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:9440", "server HOST:PORT")
	connections := fs.Int("connections", 4, "connections, one query in flight on each")
	duration := fs.Duration("duration", 3*time.Second, "how long")
	plain := fs.Bool("plain", false, "plaintext, not TLS")
	fs.Parse(args)
	clients := make([]*client, *connections)
	for i := range clients {
		clients[i] = connectTo(*target, !*plain)
	}
	workload := "clickhouse-tls-go/select1"
	if *plain {
		workload = "clickhouse-go/select1"
	}
	var mu sync.Mutex
	var latencies []time.Duration
	var sent, failed uint64
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			var mine []time.Duration
			var mySent, myFailed uint64
			for time.Now().Before(deadline) {
				t0 := time.Now()
				mySent++
				rows, code := c.query("SELECT 1", "")
				if code != 0 || len(rows) != 1 || rows[0][0] != "1" {
					myFailed++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			sent += mySent
			failed += myFailed
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	quantile := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		i := int(q * float64(len(latencies)-1))
		return float64(latencies[i].Nanoseconds()) / 1000
	}
	report := benchReport{
		Workload:    workload,
		Target:      *target,
		Connections: *connections,
		InFlight:    1,
		DurationS:   elapsed,
		Throughput:  float64(len(latencies)) / elapsed,
		Sent:        sent,
		Ok:          uint64(len(latencies)),
		Failed:      failed,
		P50us:       quantile(0.50),
		P99us:       quantile(0.99),
		P999us:      quantile(0.999),
		MaxUs:       quantile(1),
	}
	line, err := json.Marshal(report)
	if err != nil {
		die("report: %v", err)
	}
	fmt.Println(string(line))
	for _, c := range clients {
		c.conn.Close()
	}
}
