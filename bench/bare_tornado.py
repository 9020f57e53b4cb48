"""The baseline for bench_http.py: a bare Tornado TLS 1.3 handler that answers a fixed status JSON.

Run as ``python bench/bare_tornado.py CERT KEY PORT``; prints ``Ready`` when listening.
"""

import asyncio
import ssl
import sys

import tornado.httpserver
import tornado.web

BODY = (b'{"state":"running","status":"unknown status","commandStatus":{"command":"/bin/bash -c sleep 300"},'
        b'"startTime":"2025-04-01 11:46:36.535519 -0500 CDT"}\n')


class Status(tornado.web.RequestHandler):
    def get(self, name: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(BODY)


async def main(cert: str, key: str, port: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/status/(.*)", Status)]), ssl_options=context)
    server.listen(port, "127.0.0.1")
    print("Ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
