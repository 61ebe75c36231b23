from common.serve import run_http
from gateway.config import get_settings

if __name__ == "__main__":
    # proxy_headers off: the failed-auth limit is per client address, and X-Forwarded-For is client
    # text unless a trusted proxy wrote it (gateway/ratelimit.py client_address)
    run_http("gateway.app:app", get_settings().port or 8080, proxy_headers=False)
