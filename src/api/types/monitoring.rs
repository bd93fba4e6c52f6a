//! `monitoring`: CPU, memory, disk and network usage over time.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::{app, caller};
use crate::api::scalars::DateTime;
use crate::domain::monitoring::{self as domain, MetricSeries, Point, QueryRange};
use async_graphql::{Context, Object, SimpleObject, Union};

// ---- Data types ----

#[derive(SimpleObject, Clone, Debug)]
pub struct MonitoringValue {
    pub timestamp: DateTime,
    pub value: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct MonitoringValues {
    pub values: Vec<MonitoringValue>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct MonitoringMetric {
    pub metric_id: String,
    pub values: Vec<MonitoringValue>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct MonitoringMetrics {
    pub metrics: Vec<MonitoringMetric>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct MonitoringQueryError {
    pub error: String,
}

#[derive(Union, Clone, Debug)]
pub enum MonitoringValuesResult {
    MonitoringValues(MonitoringValues),
    MonitoringQueryError(MonitoringQueryError),
}

#[derive(Union, Clone, Debug)]
pub enum MonitoringMetricsResult {
    MonitoringMetrics(MonitoringMetrics),
    MonitoringQueryError(MonitoringQueryError),
}

#[derive(SimpleObject, Clone, Debug)]
pub struct CpuMonitoring {
    pub start: Option<DateTime>,
    pub end: Option<DateTime>,
    pub step: i32,
    pub overall_usage: MonitoringValuesResult,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct MemoryMonitoring {
    pub start: Option<DateTime>,
    pub end: Option<DateTime>,
    pub step: i32,
    pub overall_usage: MonitoringValuesResult,
    pub swap_usage_overall: MonitoringValuesResult,
    pub average_usage_by_service: MonitoringMetricsResult,
    pub max_usage_by_service: MonitoringMetricsResult,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct DiskMonitoring {
    pub start: Option<DateTime>,
    pub end: Option<DateTime>,
    pub step: i32,
    pub overall_usage: MonitoringMetricsResult,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct NetworkMonitoring {
    pub start: Option<DateTime>,
    pub end: Option<DateTime>,
    pub step: i32,
    pub overall_usage: MonitoringMetricsResult,
}

// ---- From the domain ----

/// Plain decimal text, as Prometheus gave values to the Python API.
fn text_of(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

fn averages(points: Vec<Point>) -> Vec<MonitoringValue> {
    points
        .into_iter()
        .map(|p| MonitoringValue {
            timestamp: p.at.into(),
            value: text_of(p.average),
        })
        .collect()
}

fn values_result(found: Result<Vec<Point>, String>) -> MonitoringValuesResult {
    match found {
        Ok(points) => MonitoringValuesResult::MonitoringValues(MonitoringValues {
            values: averages(points),
        }),
        Err(error) => MonitoringValuesResult::MonitoringQueryError(MonitoringQueryError { error }),
    }
}

fn metrics_result(found: Result<Vec<MetricSeries>, String>) -> MonitoringMetricsResult {
    match found {
        Ok(metrics) => MonitoringMetricsResult::MonitoringMetrics(MonitoringMetrics {
            metrics: metrics
                .into_iter()
                .map(|m| MonitoringMetric {
                    metric_id: m.id,
                    values: averages(m.points),
                })
                .collect(),
        }),
        Err(error) => MonitoringMetricsResult::MonitoringQueryError(MonitoringQueryError { error }),
    }
}

fn values_error(error: &str) -> MonitoringValuesResult {
    MonitoringValuesResult::MonitoringQueryError(MonitoringQueryError {
        error: error.to_owned(),
    })
}

fn metrics_error(error: &str) -> MonitoringMetricsResult {
    MonitoringMetricsResult::MonitoringQueryError(MonitoringQueryError {
        error: error.to_owned(),
    })
}

/// The asked range, or why it cannot be answered (a union member, never a
/// GraphQL error).
fn range_of(
    ctx: &Context<'_>,
    start: Option<DateTime>,
    end: Option<DateTime>,
    step: i32,
) -> Result<QueryRange, String> {
    QueryRange::new(
        start.map(|s| s.0),
        end.map(|e| e.0),
        step,
        app(ctx).monitoring.now(),
    )
}

// ---- Query namespace ----

// `Query.monitoring`.
#[derive(Default)]
pub struct Monitoring;

#[Object]
impl Monitoring {
    async fn cpu_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<CpuMonitoring> {
        caller(ctx)?;
        let overall_usage = match range_of(ctx, start, end, step) {
            Ok(range) => values_result(app(ctx).monitoring.values(domain::CPU, &range)),
            Err(error) => values_error(&error),
        };
        Ok(CpuMonitoring {
            start,
            end,
            step,
            overall_usage,
        })
    }

    async fn memory_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<MemoryMonitoring> {
        caller(ctx)?;
        let monitoring = &app(ctx).monitoring;
        let range = match range_of(ctx, start, end, step) {
            Ok(range) => range,
            Err(error) => {
                return Ok(MemoryMonitoring {
                    start,
                    end,
                    step,
                    overall_usage: values_error(&error),
                    swap_usage_overall: values_error(&error),
                    average_usage_by_service: metrics_error(&error),
                    max_usage_by_service: metrics_error(&error),
                });
            }
        };
        let by_service = monitoring.service_memory(&range);
        let at: DateTime = chrono::DateTime::from_timestamp(range.end, 0)
            .unwrap_or_default()
            .into();
        let summary = |pick: fn(&domain::ServiceSummary) -> f64| match &by_service {
            Ok(services) => MonitoringMetricsResult::MonitoringMetrics(MonitoringMetrics {
                metrics: services
                    .iter()
                    .map(|s| MonitoringMetric {
                        metric_id: s.service.clone(),
                        values: vec![MonitoringValue {
                            timestamp: at,
                            value: text_of(pick(s)),
                        }],
                    })
                    .collect(),
            }),
            Err(error) => metrics_error(error),
        };
        Ok(MemoryMonitoring {
            start,
            end,
            step,
            overall_usage: values_result(monitoring.values(domain::MEMORY, &range)),
            swap_usage_overall: values_result(monitoring.values(domain::SWAP, &range)),
            average_usage_by_service: summary(|s| s.average),
            max_usage_by_service: summary(|s| s.max),
        })
    }

    async fn disk_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<DiskMonitoring> {
        caller(ctx)?;
        let overall_usage = match range_of(ctx, start, end, step) {
            Ok(range) => metrics_result(app(ctx).monitoring.metrics(domain::DISK, &range)),
            Err(error) => metrics_error(&error),
        };
        Ok(DiskMonitoring {
            start,
            end,
            step,
            overall_usage,
        })
    }

    async fn network_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<NetworkMonitoring> {
        caller(ctx)?;
        let overall_usage = match range_of(ctx, start, end, step) {
            Ok(range) => metrics_result(app(ctx).monitoring.metrics(domain::NETWORK, &range)),
            Err(error) => metrics_error(&error),
        };
        Ok(NetworkMonitoring {
            start,
            end,
            step,
            overall_usage,
        })
    }
}

// ---- Root piece ----

#[derive(Default)]
pub struct MonitoringQueryRoot;

#[Object]
impl MonitoringQueryRoot {
    async fn monitoring(&self) -> Monitoring {
        Monitoring
    }
}
