"""A tiny HTTP app for the apt-python benchmark image."""
import http.server
import json

import click
import dateutil.parser


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ok": True, "epoch": dateutil.parser.isoparse("2024-01-01T00:00:00Z").timestamp()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())


@click.command()
@click.option("--port", default=8080)
def main(port):
    http.server.HTTPServer(("", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
