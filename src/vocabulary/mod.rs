//! The registry's vocabulary: the code systems, codes and code lists that
//! imports, discovery, annotations and consent all speak, each as a type that
//! parses its text once (`parse` returns `None` for what it is not) and shows
//! its stored form (`as_str`, `Display`).
//!
//! Domain code only: no HTTP or database types here.

pub mod annotations;
pub mod codes;
pub mod subjects;
pub mod variants;

pub use annotations::{AnnotationKind, AnnotationLevel, AnnotatorRole};
pub use codes::{CodePrefix, CodeSystem, DiagnosisCode, Icd10Code, SnomedCtId};
pub use subjects::Sex;
pub use variants::{Allele, Chromosome, Rsid, VariantPosition, VariantRef};
