"""nginx's auth_http: the request, the answer, and the client on the loop."""
