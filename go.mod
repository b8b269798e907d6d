module github.com/aishell/aishell

go 1.26.0

ignore ./node_modules

require (
	github.com/aws/aws-lambda-go v1.55.1 // indirect
	github.com/creack/pty v1.1.24 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
