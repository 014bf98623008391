"""How long a server keeps an idle keep-alive connection open: every uvicorn service
(``chat_common.serve``) and ws-edge's SockJS server (aiohttp). Imports nothing.

uvicorn's own 5 s is also how long common clients keep an idle pooled connection (httpx,
Node's global agent): the server closing it just as the client reuses it fails that request
(a SockJS ``xhr_send``, a call between services). Longer than the clients and than the proxies
in front (ingress-nginx keeps upstream connections 60 s), the client is always the side that
closes.
"""

KEEP_ALIVE_SECONDS = 75
