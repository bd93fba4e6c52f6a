//! `monitoring`: CPU, memory, disk and network usage over time.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::errors::unavailable;
use crate::api::scalars::DateTime;
use async_graphql::{Context, Object, SimpleObject, Union};

const MONITORING: &str = "Monitoring";

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
        let _ = (ctx, start, end, step);
        Err(unavailable(MONITORING))
    }

    async fn memory_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<MemoryMonitoring> {
        let _ = (ctx, start, end, step);
        Err(unavailable(MONITORING))
    }

    async fn disk_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<DiskMonitoring> {
        let _ = (ctx, start, end, step);
        Err(unavailable(MONITORING))
    }

    async fn network_usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] start: Option<DateTime>,
        #[graphql(default)] end: Option<DateTime>,
        #[graphql(default = 60)] step: i32,
    ) -> async_graphql::Result<NetworkMonitoring> {
        let _ = (ctx, start, end, step);
        Err(unavailable(MONITORING))
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
