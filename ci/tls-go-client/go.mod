module l7tap/tls-go-client

go 1.19
