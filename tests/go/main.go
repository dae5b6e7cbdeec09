// tmplrender executes an Ollama Modelfile TEMPLATE with Go's text/template, the way Ollama does.
//
// stdin: JSON {"template": str, "system": str, "messages": [{"role","content"}],
//              "legacy": bool, "prompt": str, "response": str}
// stdout: the rendered prompt, nothing else. Errors go to stderr with exit status 1.
//
// Data shape follows ollama/template/template.go: the template runs with missingkey=zero and the
// values {System, Messages, Tools, Response}; Messages are collated (consecutive messages of one
// role merged with "\n\n", every system message also joined into .System). With "legacy" it runs
// once with {System, Prompt, Response} instead (Ollama's path for templates without .Messages).
// The request's "system" (the Modelfile SYSTEM) is prepended as a system message when the
// conversation has none, as Ollama's chat and generate handlers do.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	Images    []any  `json:"images,omitempty"`
	ToolCalls []any  `json:"tool_calls,omitempty"`
}

type Request struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []Message `json:"messages"`
	Legacy   bool      `json:"legacy"`
	Prompt   string    `json:"prompt"`
	Response string    `json:"response"`
}

// Ollama's template FuncMap (the parts a chat template can use without tools).
var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		msg := msgs[i]
		if msg.Role == "system" {
			system = append(system, msg.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msg.Role {
			collated[len(collated)-1].Content += "\n\n" + msg.Content
		} else {
			collated = append(collated, &msg)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func run() error {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var req Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return fmt.Errorf("bad request JSON: %w", err)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		return err
	}
	if req.Legacy {
		return tmpl.Execute(os.Stdout, map[string]any{
			"System": req.System, "Prompt": req.Prompt, "Response": req.Response,
		})
	}
	msgs := req.Messages
	if req.System != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]Message{{Role: "system", Content: req.System}}, msgs...)
	}
	system, collated := collate(msgs)
	return tmpl.Execute(os.Stdout, map[string]any{
		"System": system, "Messages": collated, "Tools": nil, "Response": "",
	})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tmplrender:", err)
		os.Exit(1)
	}
}
