from common.serve import run_http
from gateway.config import get_settings

if __name__ == "__main__":
    run_http("gateway.app:app", get_settings().port or 8080)
