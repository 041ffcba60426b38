"""The HTTP protocol opskit runs uvicorn with: H11Protocol, with a shutdown that drops no request.

(No apostrophe in this file or the bootstrap: the code travels inside single-quoted
shell words of the reload script.) When a worker shuts down (a reload,
--limit-max-requests, a stop), H11Protocol.shutdown() closes at once every connection
that has no request in progress. That includes one the worker accepted in the same
turn of its event loop and has not read yet, though the request of the client is
already in the buffer of the kernel: that client meets a reset. Here such a
connection is left open for its request (which is then answered, and the connection
closed after it as usual), and closed after a second if nothing comes. Everything
else is as uvicorn does it.
"""

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a connection that has sent nothing may stay open after the shutdown began.
UNREAD_GRACE = 1.0


class DrainingH11Protocol(H11Protocol):
    _read = False

    def data_received(self, data):
        self._read = True
        super().data_received(data)

    def shutdown(self):
        if self.cycle is None and not self._read:
            self.loop.call_later(UNREAD_GRACE, self._close_unread)
            return
        super().shutdown()

    def _close_unread(self):
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()
