from common.serve import run_http
from realtime_svc.config import get_settings

if __name__ == "__main__":
    run_http("realtime_svc.app:app", get_settings().port or 8081)
