package kafkautil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/testenv"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in a temporary directory.
type testPKI struct {
	caFile, clientCert, clientKey string
	server                        tls.Certificate
	pool                          *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clickrec-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliDER, cliKey := issue(3, "clickrec", x509.ExtKeyUsageClientAuth)
	p.clientCert = write("client.pem", "CERTIFICATE", cliDER)
	p.clientKey = write("client.key", "PRIVATE KEY", keyDER(cliKey))
	return p
}

func TestSecurityValidate(t *testing.T) {
	pki := newTestPKI(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		s       Security
		wantErr string // "" = valid
	}{
		{"plaintext", Security{}, ""},
		{"scram-256", Security{SASLMechanism: "SCRAM-SHA-256", SASLUser: "u", SASLPassword: "p"}, ""},
		{"scram-512 lower case", Security{SASLMechanism: "scram-sha-512", SASLUser: "u", SASLPassword: "p"}, ""},
		{"plain over tls", Security{SASLMechanism: "PLAIN", SASLUser: "u", SASLPassword: "p", TLS: true, TLSCA: pki.caFile}, ""},
		{"mutual tls", Security{TLS: true, TLSCA: pki.caFile, TLSCert: pki.clientCert, TLSKey: pki.clientKey}, ""},
		{"tls system CAs", Security{TLS: true}, ""},
		{"unknown mechanism", Security{SASLMechanism: "GSSAPI", SASLUser: "u", SASLPassword: "p"}, `--kafka-sasl-mechanism "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{"no user", Security{SASLMechanism: "PLAIN", SASLPassword: "p"}, "needs --kafka-sasl-user"},
		{"no password", Security{SASLMechanism: "SCRAM-SHA-256", SASLUser: "u"}, "CLICKREC_KAFKA_SASL_PASSWORD"},
		{"user without mechanism", Security{SASLUser: "u"}, "--kafka-sasl-mechanism is empty"},
		{"ca without tls", Security{TLSCA: pki.caFile}, "--kafka-tls-ca is set but --kafka-tls is not"},
		{"skip-verify without tls", Security{TLSSkipVerify: true}, "--kafka-tls-skip-verify is set but --kafka-tls is not"},
		{"skip-verify with ca", Security{TLS: true, TLSSkipVerify: true, TLSCA: pki.caFile}, "contradict"},
		{"missing ca file", Security{TLS: true, TLSCA: "/nonexistent/ca.pem"}, "--kafka-tls-ca: open /nonexistent/ca.pem"},
		{"ca file without pem", Security{TLS: true, TLSCA: notPEM}, "no PEM certificate"},
		{"cert without key", Security{TLS: true, TLSCert: pki.clientCert}, "--kafka-tls-cert needs --kafka-tls-key"},
		{"key without cert", Security{TLS: true, TLSKey: pki.clientKey}, "--kafka-tls-key needs --kafka-tls-cert"},
		{"key does not match", Security{TLS: true, TLSCert: pki.clientCert, TLSKey: notPEM}, "--kafka-tls-cert / --kafka-tls-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Partitions: 1, ReplicationFactor: 1, Security: tc.s}
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
			if cli.ExitCode(err) != 2 {
				t.Fatalf("got exit code %d for %v, want 2 (usage error)", cli.ExitCode(err), err)
			}
		})
	}
}

func TestSecurityFlagsAndEnv(t *testing.T) {
	t.Setenv("CLICKREC_KAFKA_CLIENT_LOG", "") // would add a logger option
	t.Setenv("CLICKREC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("CLICKREC_KAFKA_SASL_USER", "from-env")
	t.Setenv("CLICKREC_KAFKA_SASL_PASSWORD", "secret")
	t.Setenv("CLICKREC_KAFKA_TLS", "true")
	var c Config
	fs := cli.NewFlagSet("x", "test")
	c.Register(fs)
	if err := fs.Parse([]string{"--kafka-sasl-user", "from-flag", "--kafka-tls-server-name", "kafka.internal"}); err != nil {
		t.Fatal(err)
	}
	want := Security{SASLMechanism: "SCRAM-SHA-512", SASLUser: "from-flag", SASLPassword: "secret", TLS: true, TLSServerName: "kafka.internal"}
	if c.Security != want {
		t.Fatalf("got %+v, want %+v (a flag wins over its variable)", c.Security, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := len(c.Opts("x")); got != 6 {
		t.Fatalf("Opts returned %d options, want 6 (seeds, client id, dial timeout, metadata min age, SASL, TLS)", got)
	}
}

// TestEmbeddedTLSAndSASL runs the whole client path (SASL over mutual TLS)
// against kfake, which terminates TLS and checks SASL like a broker.
func TestEmbeddedTLSAndSASL(t *testing.T) {
	pki := newTestPKI(t)
	const user, pass = "clickrec", "clickrec-secret"
	cl, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser(SASLPlain, user, pass),
		kfake.Superuser(SASLScramSHA256, user, pass),
		kfake.Superuser(SASLScramSHA512, user, pass),
		kfake.AllowAutoTopicCreation(),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	mtls := Security{TLS: true, TLSCA: pki.caFile, TLSCert: pki.clientCert, TLSKey: pki.clientKey}
	for _, mech := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			sec := mtls
			sec.SASLMechanism, sec.SASLUser, sec.SASLPassword = mech, user, pass
			cfg := &Config{Brokers: cli.Strings(cl.ListenAddrs()), Partitions: 2, ReplicationFactor: 1, DialTimeout: 5 * time.Second, Security: sec}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			roundTrip(t, cfg, testTopics())
		})
	}
	for _, tc := range []struct {
		name string
		sec  Security
	}{
		{"wrong password", func() Security {
			s := mtls
			s.SASLMechanism, s.SASLUser, s.SASLPassword = SASLScramSHA256, user, "wrong"
			return s
		}()},
		{"no client certificate", Security{TLS: true, TLSCA: pki.caFile, SASLMechanism: SASLPlain, SASLUser: user, SASLPassword: pass}},
		{"system CAs do not know the test CA", Security{TLS: true, TLSCert: pki.clientCert, TLSKey: pki.clientKey,
			SASLMechanism: SASLPlain, SASLUser: user, SASLPassword: pass}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Brokers: cli.Strings(cl.ListenAddrs()), Partitions: 1, ReplicationFactor: 1, DialTimeout: 3 * time.Second, Security: tc.sec}
			pingFails(t, cfg)
		})
	}
}

// pingFails checks that Ping fails with a usage error that names the security flags.
func pingFails(t *testing.T, cfg *Config) {
	t.Helper()
	cl, err := kgo.NewClient(cfg.Opts("kafkautil-test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = Ping(testenv.Context(t, 30*time.Second), cfg, cl)
	if err == nil {
		t.Fatal("Ping succeeded, want an authentication or TLS failure")
	}
	if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--kafka-sasl-* / --kafka-tls*") {
		t.Fatalf("got %v, want a usage error naming the security flags", err)
	}
	t.Log(err)
}

func TestEmbeddedClearsSecurity(t *testing.T) {
	cfg := &Config{Partitions: 1, ReplicationFactor: 1, DialTimeout: 5 * time.Second,
		Security: Security{SASLMechanism: SASLPlain, SASLUser: "u", SASLPassword: "p", TLS: true}}
	e, err := StartEmbedded(cfg, DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if cfg.Security != (Security{}) {
		t.Fatalf("security settings survived StartEmbedded: %+v", cfg.Security)
	}
	roundTrip(t, cfg, testTopics())
}

// The SASL broker started by scripts/kafka-sasl.sh: SASL_PLAINTEXT on 19092,
// SASL_SSL on 19094 with a certificate from the CA in its data directory.
const (
	saslTestUser     = "clickrec"
	saslTestPassword = "clickrec-secret"
)

// saslBroker returns the address of the SASL test broker and its CA file, or
// skips (fails under CI=true) when it is not running.
func saslBroker(t *testing.T) (plaintext, tlsAddr, caFile string) {
	t.Helper()
	get := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	home, _ := os.UserHomeDir()
	plaintext = get("CLICKREC_TEST_KAFKA_SASL_BROKERS", "127.0.0.1:19092")
	tlsAddr = get("CLICKREC_TEST_KAFKA_SASL_TLS_BROKERS", "127.0.0.1:19094")
	caFile = get("CLICKREC_TEST_KAFKA_SASL_CA", filepath.Join(home, ".cache/clickrec/run/kafka-sasl-data-19092/tls/ca.pem"))
	how := "start it with scripts/kafka-sasl.sh start, or set CLICKREC_TEST_KAFKA_SASL_BROKERS, CLICKREC_TEST_KAFKA_SASL_TLS_BROKERS and CLICKREC_TEST_KAFKA_SASL_CA"
	for _, addr := range []string{plaintext, tlsAddr} {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			testenv.Missing(t, "the SASL Kafka broker at "+addr, how+": "+err.Error())
		}
		c.Close()
	}
	if _, err := os.Stat(caFile); err != nil {
		testenv.Missing(t, "the SASL Kafka broker's CA", how+": "+err.Error())
	}
	return plaintext, tlsAddr, caFile
}

// TestRealKafkaSASL authenticates to a real Apache Kafka broker with every
// mechanism, over SASL_PLAINTEXT and SASL_SSL, and checks that wrong
// credentials and a missing mechanism are refused with a clear error.
func TestRealKafkaSASL(t *testing.T) {
	plaintext, tlsAddr, caFile := saslBroker(t)
	cfg := func(addr string, sec Security) *Config {
		return &Config{Brokers: cli.Strings{addr}, Partitions: 1, ReplicationFactor: 1, DialTimeout: 10 * time.Second, Security: sec}
	}
	for _, mech := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run("SASL_PLAINTEXT "+mech, func(t *testing.T) {
			c := cfg(plaintext, Security{SASLMechanism: mech, SASLUser: saslTestUser, SASLPassword: saslTestPassword})
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c, testTopics())
		})
	}
	t.Run("SASL_SSL SCRAM-SHA-512", func(t *testing.T) {
		c := cfg(tlsAddr, Security{SASLMechanism: SASLScramSHA512, SASLUser: saslTestUser, SASLPassword: saslTestPassword,
			TLS: true, TLSCA: caFile})
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, testTopics())
	})
	t.Run("wrong password", func(t *testing.T) {
		pingFails(t, cfg(plaintext, Security{SASLMechanism: SASLScramSHA256, SASLUser: saslTestUser, SASLPassword: "wrong"}))
	})
	t.Run("unknown user", func(t *testing.T) {
		pingFails(t, cfg(plaintext, Security{SASLMechanism: SASLPlain, SASLUser: "mallory", SASLPassword: saslTestPassword}))
	})
	t.Run("TLS without the broker's CA", func(t *testing.T) {
		pingFails(t, cfg(tlsAddr, Security{SASLMechanism: SASLPlain, SASLUser: saslTestUser, SASLPassword: saslTestPassword, TLS: true}))
	})
}
