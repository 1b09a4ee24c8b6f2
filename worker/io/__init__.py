"""Sockets on the worker's loop: the loop, epoll, streams, outgoing connects, the relay."""
