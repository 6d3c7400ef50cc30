/** The dashboard's metrics, on its own Registry. Labels come from bounded sets (route patterns, op names, codes). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface DashboardMetrics {
  httpRequests: Counter<'method' | 'route' | 'status_code'>;
  httpDuration: Histogram<'method' | 'route'>;
  apiRequests: Counter<'op' | 'result'>;
  apiDuration: Histogram<'op'>;
  rateLimited: Counter;
  sseClients: Gauge;
  sseEvents: Counter;
}

export function createMetrics(registry: Registry): DashboardMetrics {
  return {
    httpRequests: new Counter({
      name: 'edgenfv_dashboard_http_requests_total',
      help: 'HTTP requests served by the dashboard, by route pattern and status code.',
      labelNames: ['method', 'route', 'status_code'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'edgenfv_dashboard_http_request_duration_seconds',
      help: 'Time to serve a dashboard HTTP request.',
      labelNames: ['method', 'route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    apiRequests: new Counter({
      name: 'edgenfv_dashboard_api_requests_total',
      help: 'Message API requests the dashboard made, by operation and result (ok or an error code).',
      labelNames: ['op', 'result'],
      registers: [registry],
    }),
    apiDuration: new Histogram({
      name: 'edgenfv_dashboard_api_request_duration_seconds',
      help: 'Round trip of a message API request made by the dashboard.',
      labelNames: ['op'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'edgenfv_dashboard_rate_limited_total',
      help: 'API requests refused with 429 by the per-client rate limit.',
      registers: [registry],
    }),
    sseClients: new Gauge({
      name: 'edgenfv_dashboard_sse_clients',
      help: 'Open live streams (GET /api/events/stream).',
      registers: [registry],
    }),
    sseEvents: new Counter({
      name: 'edgenfv_dashboard_sse_events_total',
      help: 'Notifications sent to live streams.',
      registers: [registry],
    }),
  };
}
