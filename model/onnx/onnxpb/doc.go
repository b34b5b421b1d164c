// Package onnxpb holds the Go types of the ONNX protobuf schema (ModelProto,
// GraphProto, NodeProto, TensorProto, ...), generated from onnx.proto so that
// clickrec can write ONNX models without Python.
//
// onnx.proto is a verbatim copy of /usr/include/onnx/onnx.proto from the Debian
// package libonnx-dev 1.12.0 (ONNX IR version 8, operator sets up to 17). The
// generated onnx.pb.go is committed, so building never needs protoc. To
// regenerate (after replacing onnx.proto, if wanted):
//
//	apt-get install -y protobuf-compiler libonnx-dev      # protoc 3.21.12
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./model/onnx/onnxpb/
//
// protoc-gen-go's version must match google.golang.org/protobuf in go.mod.
package onnxpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go_opt=Monnx.proto=github.com/clickrec/clickrec/model/onnx/onnxpb onnx.proto
