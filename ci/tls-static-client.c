/* A ClickHouse native-protocol client over TLS, linked statically against OpenSSL
 * (libssl.a, libcrypto.a): the binary holds SSL_read/SSL_write itself, as official
 * ClickHouse builds do. Built by ci/tls-static-client.sh; used by ci/accept/tls.py.
 *
 *   tls-static-client HOST PORT QUERY_ID_PREFIX N [START_DELAY_MS]
 *
 * Runs N queries on one connection (the same mix as ci/accept/tls.py's Python clients:
 * small SELECTs, a 1,000-row result, a failing query), query ids PREFIX-0 .. PREFIX-N-1,
 * and prints {"ok": .., "60": ..} (answers by outcome). Uncompressed; client revision
 * 54060 (client info with quota key, no later extensions). Exits 1 on anything it does not
 * understand. */
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REVISION 54060

static SSL *ssl;
static unsigned char rbuf[1 << 16];
static size_t rpos, rlen;
static unsigned char wbuf[1 << 16];
static size_t wlen;

static void die(const char *what)
{
	fprintf(stderr, "tls-static-client: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static void flush_out(void)
{
	size_t off = 0;
	while (off < wlen) {
		int n = SSL_write(ssl, wbuf + off, (int)(wlen - off));
		if (n <= 0)
			die("SSL_write failed");
		off += (size_t)n;
	}
	wlen = 0;
}

static void put(const void *p, size_t n)
{
	if (wlen + n > sizeof(wbuf))
		die("request too large");
	memcpy(wbuf + wlen, p, n);
	wlen += n;
}

static void put_varint(uint64_t v)
{
	do {
		unsigned char b = v & 0x7f;
		v >>= 7;
		if (v)
			b |= 0x80;
		put(&b, 1);
	} while (v);
}

static void put_str(const char *s)
{
	put_varint(strlen(s));
	put(s, strlen(s));
}

static void put_u8(unsigned char v) { put(&v, 1); }

static unsigned char get_u8(void)
{
	if (rpos == rlen) {
		int n = SSL_read(ssl, rbuf, sizeof(rbuf));
		if (n <= 0)
			die("SSL_read failed or connection closed");
		rpos = 0;
		rlen = (size_t)n;
	}
	return rbuf[rpos++];
}

static void skip(uint64_t n)
{
	while (n--)
		get_u8();
}

static uint64_t get_varint(void)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		unsigned char b = get_u8();
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	die("bad varint");
	return 0;
}

static void skip_str(void) { skip(get_varint()); }

static void get_str(char *out, size_t cap)
{
	uint64_t n = get_varint();
	for (uint64_t i = 0; i < n; i++) {
		unsigned char c = get_u8();
		if (i + 1 < cap)
			out[i] = (char)c;
	}
	out[n < cap ? n : cap - 1] = 0;
}

static int32_t get_i32(void)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)get_u8() << (8 * i);
	return (int32_t)v;
}

/* A Data/Totals/Extremes block: table name, block info, columns of known fixed-width or
 * String types. */
static void skip_block(void)
{
	skip_str(); /* temporary table name */
	for (;;) {  /* block info */
		uint64_t field = get_varint();
		if (field == 0)
			break;
		if (field == 1)
			skip(1);
		else if (field == 2)
			skip(4);
		else
			die("unknown block info field");
	}
	uint64_t columns = get_varint(), rows = get_varint();
	for (uint64_t c = 0; c < columns; c++) {
		char type[64];
		skip_str(); /* name */
		get_str(type, sizeof(type));
		size_t width = 0;
		if (!strcmp(type, "UInt8") || !strcmp(type, "Int8"))
			width = 1;
		else if (!strcmp(type, "UInt16") || !strcmp(type, "Int16"))
			width = 2;
		else if (!strcmp(type, "UInt32") || !strcmp(type, "Int32"))
			width = 4;
		else if (!strcmp(type, "UInt64") || !strcmp(type, "Int64"))
			width = 8;
		else if (strcmp(type, "String"))
			die("unsupported column type");
		for (uint64_t r = 0; r < rows; r++) {
			if (width)
				skip(width);
			else
				skip_str();
		}
	}
}

static void put_empty_block(void)
{
	put_varint(2); /* Data */
	put_str("");   /* table name */
	put_varint(1); /* block info: is_overflows */
	put_u8(0);
	put_varint(2); /* bucket_num = -1 */
	put("\xff\xff\xff\xff", 4);
	put_varint(0);
	put_varint(0); /* columns */
	put_varint(0); /* rows */
}

/* Sends one query and reads its answer: 0 if it ended well, else the exception's code. */
static int query(const char *sql, const char *query_id)
{
	put_varint(1); /* Query */
	put_str(query_id);
	put_u8(1);     /* client info: initial query */
	put_str("");   /* initial user */
	put_str("");   /* initial query id */
	put_str("[::ffff:127.0.0.1]:0");
	put_u8(1);     /* interface: TCP */
	put_str("l7tap");
	put_str("localhost");
	put_str("tls-static-client");
	put_varint(18);
	put_varint(16);
	put_varint(REVISION);
	put_str("");   /* quota key */
	put_str("");   /* end of settings */
	put_varint(2); /* stage: complete */
	put_varint(0); /* no compression */
	put_str(sql);
	put_empty_block();
	flush_out();
	int code = 0;
	for (;;) {
		uint64_t packet = get_varint();
		switch (packet) {
		case 1: /* Data */
		case 7: /* Totals */
		case 8: /* Extremes */
			skip_block();
			break;
		case 2: { /* Exception */
			int nested;
			do {
				int32_t c = get_i32();
				if (!code)
					code = c;
				skip_str();
				skip_str();
				skip_str();
				nested = get_u8();
			} while (nested);
			return code;
		}
		case 3: /* Progress: rows, bytes, total rows */
			get_varint();
			get_varint();
			get_varint();
			break;
		case 5: /* EndOfStream */
			return 0;
		case 6: /* ProfileInfo */
			get_varint();
			get_varint();
			get_varint();
			skip(1);
			get_varint();
			skip(1);
			break;
		default:
			die("unexpected server packet");
		}
	}
}

static const char *sql_of(int i, char *buf, size_t cap)
{
	if (i % 10 == 3)
		return "SELECT * FROM l7tap.no_such_table";
	if (i % 10 == 7) /* uncompressed: small enough not to be cut (see ci/accept/tls.py) */
		return "SELECT number, toString(number) FROM system.numbers LIMIT 1000";
	snprintf(buf, cap, "SELECT %d, 'tls'", i);
	return buf;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: %s HOST PORT QUERY_ID_PREFIX N [START_DELAY_MS]\n", argv[0]);
		return 2;
	}
	int n = atoi(argv[4]);
	if (argc == 6) /* a wait before connecting (for a capture's scan to find this binary) */
		usleep((useconds_t)atoi(argv[5]) * 1000);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(argv[1], argv[2], &hints, &ai))
		die("cannot resolve the host");
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen))
		die("cannot connect");
	freeaddrinfo(ai);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		die("SSL_CTX_new");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* the test bed's self-signed certificate */
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		die("TLS handshake failed");

	put_varint(0); /* Hello */
	put_str("tls-static-client");
	put_varint(18);
	put_varint(16);
	put_varint(REVISION);
	put_str("default");
	put_str("default");
	put_str("");
	flush_out();
	uint64_t packet = get_varint();
	if (packet == 2)
		die("the server refused the Hello");
	if (packet != 0)
		die("no server Hello");
	skip_str();           /* server name */
	get_varint();         /* major */
	get_varint();         /* minor */
	get_varint();         /* revision */
	skip_str();           /* time zone (revision >= 54058) */

	int ok = 0, failed60 = 0;
	char buf[128], query_id[256];
	for (int i = 0; i < n; i++) {
		snprintf(query_id, sizeof(query_id), "%s-%d", argv[3], i);
		int code = query(sql_of(i, buf, sizeof(buf)), query_id);
		if (code == 0)
			ok++;
		else if (code == 60)
			failed60++;
		else
			die("unexpected exception code");
	}
	SSL_shutdown(ssl);
	close(fd);
	printf("{\"ok\": %d, \"60\": %d}\n", ok, failed60);
	return 0;
}
