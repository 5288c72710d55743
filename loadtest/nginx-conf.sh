# Sourced by compare.sh and callgrind.sh: nginx doing trackgate's job, the
# same configuration for every measurement that compares the two.
#
#   nginx_conf DIR PORT ORIGIN_PORT [MAIN_EXTRA [HTTP_EXTRA [SERVER_EXTRA]]]
#
# prints a configuration with one worker, its pid, logs and temp files under
# DIR, listening on PORT: the pixel (`empty_gif` with a buffered JSON
# `access_log` of what trackgate's event holds) and the proxy (`/static/` to
# the origin on ORIGIN_PORT with upstream keepalive). The extras are added to
# the main context, the `http` block and the `server` block.
nginx_conf() {
    local dir=$1 port=$2 origin=$3 main_extra=${4:-} http_extra=${5:-} server_extra=${6:-}
    cat <<NGX
worker_processes 1;
daemon off;
$main_extra
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    proxy_buffers 16 16k;
    proxy_buffer_size 16k;
    log_format track escape=json '{"ts":"\$time_iso8601","ip":"\$remote_addr","method":"\$request_method",'
        '"uri":"\$request_uri","ua":"\$http_user_agent","referer":"\$http_referer",'
        '"cookie":"\$cookie__tg_sid","status":\$status}';
    upstream origin { server 127.0.0.1:$origin; keepalive 128; }
$http_extra
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location = /px.gif {
            empty_gif;
            access_log $dir/px.ndjson track buffer=64k flush=1s;
        }
        location /static/ {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
$server_extra
    }
}
NGX
}
