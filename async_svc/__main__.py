from async_svc.config import get_settings
from common.serve import run_http

if __name__ == "__main__":
    run_http("async_svc.app:app", get_settings().port or 8082)
