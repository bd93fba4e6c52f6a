use crate::api::auth::app;
use crate::api::errors::{Status, locale, say};
use crate::api::scalars::DateTime;
use crate::api::types::returns::GenericMutationReturn;
use crate::domain::i18n::Locale;
use crate::domain::jobs::Job as DomainJob;
use async_graphql::{Context, Object, SimpleObject};

#[derive(SimpleObject, Debug, Clone)]
pub struct ApiJob {
    pub uid: String,
    pub type_id: String,
    pub name: String,
    pub description: String,
    pub status: String,
    pub status_text: Option<String>,
    pub progress: Option<i32>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub finished_at: Option<DateTime>,
    pub error: Option<String>,
    pub result: Option<String>,
}

impl ApiJob {
    pub fn from_job(job: &DomainJob, locale: Locale) -> Self {
        ApiJob {
            uid: job.uid.clone(),
            type_id: job.type_id.clone(),
            name: job.name.get(locale).to_owned(),
            description: job.description.get(locale).to_owned(),
            status: job.status.as_str().to_owned(),
            status_text: job.status_text.as_ref().map(|t| t.get(locale).to_owned()),
            progress: job.progress,
            created_at: job.created_at.into(),
            updated_at: job.updated_at.into(),
            finished_at: job.finished_at.map(Into::into),
            error: job.error.as_ref().map(|t| t.get(locale).to_owned()),
            result: job.result.as_ref().map(|t| t.get(locale).to_owned()),
        }
    }
}

// `Query.jobs`.
#[derive(Default)]
pub struct Job;

#[Object]
impl Job {
    async fn get_jobs(&self, ctx: &Context<'_>) -> Vec<ApiJob> {
        let locale = locale(ctx);
        app(ctx)
            .jobs
            .list()
            .iter()
            .map(|j| ApiJob::from_job(j, locale))
            .collect()
    }

    async fn get_job(&self, ctx: &Context<'_>, job_id: String) -> Option<ApiJob> {
        app(ctx)
            .jobs
            .get(&job_id)
            .map(|j| ApiJob::from_job(&j, locale(ctx)))
    }
}

#[derive(Default)]
pub struct JobMutations;

#[Object]
impl JobMutations {
    pub async fn remove_job(&self, ctx: &Context<'_>, job_id: String) -> GenericMutationReturn {
        match app(ctx).jobs.remove(&job_id) {
            Ok(()) => Status::ok(200, say(ctx, "Job removed", "Задача удалена")).into(),
            Err(failure) => Status::failed(&failure, locale(ctx)).into(),
        }
    }
}

#[derive(Default)]
pub struct JobsQueryRoot;

#[Object]
impl JobsQueryRoot {
    async fn jobs(&self) -> Job {
        Job
    }
}

#[derive(Default)]
pub struct JobsMutationRoot;

#[Object]
impl JobsMutationRoot {
    async fn jobs(&self) -> JobMutations {
        JobMutations
    }

    #[graphql(deprecation = "Use `jobs.remove_job` instead")]
    async fn remove_job(
        &self,
        ctx: &Context<'_>,
        job_id: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        JobMutations.remove_job(ctx, job_id).await
    }
}
