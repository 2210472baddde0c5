//! The discovery builder: a criteria form read from the query string (a GET
//! form, so it works without script and a result can be bookmarked), turned
//! into the criteria the REST API takes, and answered by the same count and
//! breakdown functions, so the page shows exactly what the API shows to the
//! same person. Nothing is asked until the form is sent: each answer spends
//! discovery budget.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{given, pairs};
use crate::access::projects as project_service;
use crate::app::AppState;
use crate::discovery::sql::Dimension;
use crate::discovery::{BreakdownResult, Disclosure};
use crate::error::ApiError;
use crate::http::discovery::{BreakdownRequest, CountRequest, breakdown_for, count_for};
use crate::opencohort::publish::VersionBreakdownCell;
use crate::web::chart::{self, Chart};
use crate::web::{Chrome, Visitor, WebError, render};

/// The second breakdown a researcher may pick (the first is always by site).
const SECOND: [(&str, Dimension, &str); 7] = [
    ("model", Dimension::Model, "By scanner model"),
    ("manufacturer", Dimension::Manufacturer, "By scanner manufacturer"),
    ("field_strength", Dimension::FieldStrength, "By field strength (T)"),
    ("modality", Dimension::Modality, "By modality"),
    ("sex", Dimension::Sex, "By sex"),
    ("age_band", Dimension::AgeBand, "By age band (years, at the study)"),
    ("cohort", Dimension::Cohort, "By cohort"),
];

/// The criteria form as sent.
#[derive(Debug, Default)]
struct Form {
    cohorts: Vec<String>,
    sites: Vec<String>,
    sexes: Vec<String>,
    modalities: String,
    body_parts: String,
    age_min: String,
    age_max: String,
    lab_field: String,
    lab_min: String,
    lab_max: String,
    lab_unit: String,
    dx_system: String,
    dx_prefix: String,
    variant: String,
    genotype: String,
    annotation: String,
    project: String,
    by: String,
    run: bool,
}

impl Form {
    fn read(query: &str) -> Self {
        let mut form = Self { by: "model".to_owned(), ..Self::default() };
        for (name, value) in pairs(query) {
            match name.as_str() {
                "cohort" => form.cohorts.push(value),
                "site" => form.sites.push(value),
                "sex" => form.sexes.push(value),
                "modality" => form.modalities = value,
                "body_part" => form.body_parts = value,
                "age_min" => form.age_min = value,
                "age_max" => form.age_max = value,
                "lab_field" => form.lab_field = value,
                "lab_min" => form.lab_min = value,
                "lab_max" => form.lab_max = value,
                "lab_unit" => form.lab_unit = value,
                "dx_system" => form.dx_system = value,
                "dx_prefix" => form.dx_prefix = value,
                "variant" => form.variant = value,
                "genotype" => form.genotype = value,
                "annotation" => form.annotation = value,
                "project" => form.project = value,
                "by" => form.by = value,
                "run" => form.run = true,
                _ => {}
            }
        }
        form
    }

    fn has(&self, list: &str, value: &str) -> bool {
        let list = match list {
            "cohort" => &self.cohorts,
            "site" => &self.sites,
            _ => &self.sexes,
        };
        list.iter().any(|v| v == value)
    }

    /// The criteria the form describes (absent: everything); a field that is
    /// not a number where one is needed is named.
    fn criteria(&self) -> Result<Option<Value>, String> {
        let number = |label: &str, text: &str| -> Result<Option<f64>, String> {
            given(text)
                .map(|t| t.parse::<f64>().map_err(|_| format!("{label} is not a number: write e.g. 40 or 6.5")))
                .transpose()
        };
        let list = |text: &str| -> Vec<String> { text.split(',').filter_map(given).collect() };
        let mut all = Vec::new();
        if !self.cohorts.is_empty() {
            all.push(json!({"field": "cohort", "in": self.cohorts}));
        }
        if !self.sites.is_empty() {
            all.push(json!({"field": "site", "in": self.sites}));
        }
        if !self.sexes.is_empty() {
            all.push(json!({"field": "sex", "in": self.sexes}));
        }
        for (field, text) in [("modality", &self.modalities), ("body_part", &self.body_parts)] {
            let values = list(text);
            if !values.is_empty() {
                all.push(json!({"field": field, "in": values}));
            }
        }
        let range = |field: &str, min: Option<f64>, max: Option<f64>, unit: Option<String>| {
            let mut condition = json!({"field": field});
            if let Some(min) = min {
                condition["min"] = json!(min);
            }
            if let Some(max) = max {
                condition["max"] = json!(max);
            }
            if let Some(unit) = unit {
                condition["unit"] = json!(unit);
            }
            condition
        };
        let (age_min, age_max) = (number("Age from", &self.age_min)?, number("Age to", &self.age_max)?);
        if age_min.is_some() || age_max.is_some() {
            all.push(range("age_at_study", age_min, age_max, None));
        }
        if let Some(field) = given(&self.lab_field) {
            let (min, max) = (number("Value from", &self.lab_min)?, number("Value to", &self.lab_max)?);
            if min.is_none() && max.is_none() {
                return Err(format!("give a lowest or a highest value of {field}"));
            }
            all.push(range(&field, min, max, given(&self.lab_unit)));
        }
        if let Some(prefix) = given(&self.dx_prefix) {
            let mut condition = json!({"field": "diagnosis", "prefix": prefix});
            if let Some(system) = given(&self.dx_system) {
                condition["system"] = json!(system);
            }
            all.push(condition);
        }
        if let Some(variant) = given(&self.variant) {
            let genotype = given(&self.genotype).unwrap_or_else(|| "carrier".to_owned());
            all.push(json!({"field": "genotype", "variant": variant, "genotype": genotype}));
        }
        if let Some(kind) = given(&self.annotation) {
            all.push(json!({"field": "annotation", "kind": [kind]}));
        }
        Ok(match all.len() {
            0 => None,
            _ => Some(json!({"and": all})),
        })
    }

    fn project(&self) -> Result<Option<Uuid>, String> {
        given(&self.project)
            .map(|p| Uuid::parse_str(&p).map_err(|_| "choose a project from the list".to_owned()))
            .transpose()
    }

    fn second(&self) -> (Dimension, &'static str) {
        SECOND.iter().find(|(name, ..)| *name == self.by).map_or((Dimension::Model, SECOND[0].2), |(_, d, t)| (*d, t))
    }
}

/// One of the four counts, as shown.
struct Shown {
    label: &'static str,
    value: String,
}

/// A breakdown's chart, with the total over its dimension as shown.
struct ChartView {
    chart: Chart,
    total: String,
    /// No subject has a value of the dimension (subjects without imaging have no scanner).
    empty: bool,
}

/// The answers, as the page shows them.
struct Results {
    exact: bool,
    counts: Vec<Shown>,
    /// The strictest threshold among the cohorts the query can touch.
    threshold: i64,
    thresholds: Vec<(String, i64)>,
    /// Standard deviation, bound, mean absolute change.
    noise: Option<(f64, i64, f64)>,
    anchored: bool,
    /// Units spent by this run, units left, allowance, window in days.
    budget: Option<(i64, i64, u32, u32)>,
    charts: Vec<ChartView>,
    /// Cells suppressed across the charts.
    suppressed_cells: usize,
    /// The request body of the count, for the API.
    request: String,
}

#[derive(Template)]
#[template(path = "discover.html", config = "src/web/askama.toml")]
struct DiscoverPage {
    chrome: Chrome,
    form: Form,
    cohorts: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    lab_fields: Vec<(String, String, String)>,
    projects: Vec<(String, String)>,
    second: Vec<(&'static str, &'static str)>,
    problem: Option<String>,
    results: Option<Results>,
}

/// The words of a suppressed count.
fn fewer_than(threshold: i64) -> String {
    format!("fewer than {threshold} (suppressed)")
}

fn threshold_of(disclosure: &Disclosure) -> i64 {
    disclosure.cohort_thresholds.iter().map(|c| c.threshold).fold(disclosure.threshold, i64::max)
}

/// A breakdown's cells as a chart (one split, `subjects`) and its total, as shown.
fn breakdown_chart(id: &str, title: &'static str, result: &BreakdownResult, threshold: i64) -> (ChartView, usize) {
    let cells: Vec<VersionBreakdownCell> = result
        .cells
        .iter()
        .filter(|c| !c.total)
        .map(|c| VersionBreakdownCell {
            by: id.to_owned(),
            value: c.values.first().cloned().flatten(),
            split: "subjects".to_owned(),
            subjects: c.counts.subjects,
            suppressed: c.suppressed,
        })
        .collect();
    let hidden = cells.iter().filter(|c| c.suppressed).count();
    let words = format!("fewer than {threshold}, or hidden to shield a small cell");
    let total = result.cells.iter().find(|c| c.total).map_or_else(String::new, |c| {
        c.counts
            .subjects
            .map_or_else(|| format!("fewer than {threshold} subjects (suppressed)"), |n| format!("{n} subjects"))
    });
    let empty = cells.is_empty();
    (ChartView { chart: chart::one(id, title, &cells, &words), total, empty }, hidden)
}

async fn answer(
    state: &AppState,
    principal: &crate::auth::Principal,
    criteria: Option<Value>,
    project: Option<Uuid>,
    second: (Dimension, &'static str),
) -> Result<Results, ApiError> {
    let request = json!({"criteria": criteria, "project": project});
    let count = count_for(state, principal, &CountRequest { criteria: criteria.clone(), project }).await?;
    let by_site = BreakdownRequest { criteria: criteria.clone(), by: vec![Dimension::Site], project };
    let by_site = breakdown_for(state, principal, &by_site).await?;
    let by_second =
        breakdown_for(state, principal, &BreakdownRequest { criteria, by: vec![second.0], project }).await?;
    let disclosure = &by_second.disclosure;
    let threshold = threshold_of(&count.disclosure);
    let shown = |n: Option<i64>| n.map_or_else(|| fewer_than(threshold), |n| n.to_string());
    let c = &count.counts;
    let mut charts = Vec::new();
    let mut suppressed_cells = 0;
    for (id, title, result) in [("site", "By site", &by_site), ("second", second.1, &by_second)] {
        let (chart, hidden) = breakdown_chart(id, title, result, threshold);
        charts.push(chart);
        suppressed_cells += hidden;
    }
    let spent: i64 = [&count.disclosure, &by_site.disclosure, &by_second.disclosure]
        .iter()
        .filter_map(|d| d.budget.as_ref().map(|b| i64::from(b.spent)))
        .sum();
    Ok(Results {
        exact: count.disclosure.exact,
        counts: vec![
            Shown { label: "Subjects", value: shown(c.subjects) },
            Shown { label: "Studies", value: shown(c.studies) },
            Shown { label: "Series", value: shown(c.series) },
            Shown { label: "Instances", value: shown(c.instances) },
        ],
        threshold,
        thresholds: count.disclosure.cohort_thresholds.iter().map(|t| (t.cohort.clone(), t.threshold)).collect(),
        noise: disclosure.noise.as_ref().map(|n| (n.sd, n.bound, n.mean_absolute)),
        anchored: disclosure.anchored,
        budget: disclosure.budget.as_ref().map(|b| (spent, b.remaining, b.allowance, b.window_days)),
        charts,
        suppressed_cells,
        request: serde_json::to_string_pretty(&request).unwrap_or_default(),
    })
}

/// A refusal of the query, in words (an invalid one with each problem).
fn problem_of(error: ApiError) -> Result<String, WebError> {
    match error {
        ApiError::Invalid { message, problems, .. } => {
            let each: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
            Ok(format!("{message}: {}.", each.join("; ")))
        }
        ApiError::TooManyRequests { message, retry_after } => {
            Ok(format!("Not answered: {message}. Try again in {} hours.", retry_after.div_ceil(3600)))
        }
        error if error.status().is_client_error() => Ok(format!("Not answered: {error}.")),
        error => Err(error.into()),
    }
}

pub async fn page(
    State(state): State<AppState>,
    visitor: Visitor,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let principal = visitor.signed_in()?;
    let form = Form::read(query.as_deref().unwrap_or(""));
    let cohorts = crate::registry::db::list_cohorts(&state.db).await?.into_iter().map(|c| (c.slug, c.title)).collect();
    let sites = crate::registry::db::list_sites(&state.db).await?.into_iter().map(|s| (s.code, s.name)).collect();
    let lab_fields = crate::dictionary::db::fields(&state.db)
        .await?
        .into_iter()
        .filter(|f| {
            matches!(f.value_type, crate::dictionary::ValueType::Number | crate::dictionary::ValueType::Integer)
        })
        .filter(|f| !matches!(f.id.as_str(), "age_at_study" | "field_strength"))
        .map(|f| (f.id, f.title, f.unit.unwrap_or_default()))
        .collect();
    let projects = project_service::list_projects(&state.db, principal)
        .await?
        .into_iter()
        .filter(|p| p.membership.as_ref().is_some_and(|m| m.accepted_at.is_some()) && p.closed_at.is_none())
        .map(|p| (p.id.to_string(), p.title))
        .collect();
    let mut problem = None;
    let mut results = None;
    if form.run {
        match form.criteria().and_then(|c| form.project().map(|p| (c, p))) {
            Err(message) => problem = Some(message),
            Ok((criteria, project)) => match answer(&state, principal, criteria, project, form.second()).await {
                Ok(answered) => results = Some(answered),
                Err(error) => problem = Some(problem_of(error)?),
            },
        }
    }
    Ok(render(&DiscoverPage {
        chrome: Chrome::new(&visitor, "discover"),
        form,
        cohorts,
        sites,
        lab_fields,
        projects,
        second: SECOND.iter().map(|(name, _, title)| (*name, *title)).collect(),
        problem,
        results,
    }))
}
