//! Genotypes of selected variants: a VCF (plain or gzip/bgzip) whose sample
//! names are the local patient IDs, or a table of `patient_id`, the variant
//! (`variant` as `1-55051215-G-A`, or `chrom`, `pos`, `ref`, `alt`), optional
//! `rsid` and `gene`, and `genotype` (`0/1`, `1|1`, `./.` or a count 0–2).
//!
//! Multi-allelic sites are split into one biallelic variant per alternate
//! allele; a call counts the copies of each. A call with a missing allele is
//! kept as missing, so coverage shows who was genotyped.

use std::collections::HashMap;
use std::io::Read;

use super::table::{self, Format, ShapeError, ShapeGuard};
use super::{GenotypeRow, Parsed, Problems, VariantKey, patient_id};
use crate::vocabulary::variants::{self, Allele, Chromosome, Rsid, VariantPosition};

/// Copies of allele `index` in a genotype (`0/1`, `1|2`, `1`), `None` when a call is missing;
/// `Err` when it is not a genotype.
fn copies(gt: &str, index: usize) -> Result<Option<i16>, ()> {
    let mut count = 0;
    let mut missing = false;
    let mut alleles = 0;
    for a in gt.split(['/', '|']) {
        alleles += 1;
        match a {
            "." => missing = true,
            n => {
                let n: usize = n.parse().map_err(|_| ())?;
                if n == index {
                    count += 1;
                }
            }
        }
    }
    if alleles > 2 || gt.is_empty() {
        return Err(());
    }
    Ok((!missing).then_some(count))
}

/// Index of `key` in `parsed.variants`, added when new.
fn intern(parsed: &mut Parsed, index: &mut HashMap<(String, i64, String, String), u32>, key: VariantKey) -> u32 {
    let id = (key.chrom.clone(), key.pos, key.reference.clone(), key.alt.clone());
    if let Some(at) = index.get(&id) {
        let existing = &mut parsed.variants[*at as usize];
        existing.rsid = existing.rsid.take().or(key.rsid);
        existing.gene = existing.gene.take().or(key.gene);
        return *at;
    }
    let at = u32::try_from(parsed.variants.len()).expect("fewer than 2^32 variants");
    parsed.variants.push(key);
    index.insert(id, at);
    at
}

fn push_call(
    parsed: &mut Parsed,
    calls: &mut HashMap<(u32, u32), u64>,
    call: GenotypeRow,
    row: u64,
    column: &str,
    problems: &mut Problems,
) {
    match calls.insert((call.patient, call.variant), row) {
        Some(earlier) => problems.at(
            row,
            column,
            "duplicate-call",
            format!("the same patient and variant already have a call on row {earlier}"),
        ),
        None => parsed.genotypes.push(call),
    }
}

/// Why a gzip body cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("the gzip stream is corrupt")]
    Corrupt,
    #[error("the file expands beyond the import size limit")]
    TooLarge,
    /// A line of the expanded text breaks a limit of `guard`.
    #[error(transparent)]
    Shape(#[from] ShapeError),
}

/// The body, gunzipped when it is gzip or bgzip (within `limit` bytes); the
/// expanded text is checked by `guard` as it comes out, so a hostile line is
/// refused before it is expanded whole.
pub fn gunzip<'a>(
    body: &'a [u8],
    limit: usize,
    mut guard: Option<&mut ShapeGuard>,
) -> Result<std::borrow::Cow<'a, [u8]>, GunzipError> {
    if !is_gzip(body) {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(body);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = decoder.read(&mut buffer).map_err(|_| GunzipError::Corrupt)?;
        if read == 0 {
            return Ok(std::borrow::Cow::Owned(out));
        }
        if out.len() + read > limit {
            return Err(GunzipError::TooLarge);
        }
        if let Some(guard) = guard.as_deref_mut() {
            guard.feed(&buffer[..read])?;
        }
        out.extend_from_slice(&buffer[..read]);
    }
}

/// Whether a body starts like gzip.
pub fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&[0x1f, 0x8b])
}

/// The patients of the sample columns of a `#CHROM` header line (`None` for
/// a sample with a problem), or `None` when the line is not a VCF header.
fn vcf_samples(header: &str, row: u64, parsed: &mut Parsed, problems: &mut Problems) -> Option<Vec<Option<u32>>> {
    let columns: Vec<&str> = header.split('\t').collect();
    if columns.len() < 10 || columns[..9] != ["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"] {
        problems.add(
            Some(row),
            None,
            "invalid-vcf",
            "the header line must be #CHROM POS ID REF ALT QUAL FILTER INFO FORMAT and at least one sample, tab-separated",
        );
        return None;
    }
    let mut ids: Vec<Option<u32>> = Vec::new();
    for (i, name) in columns[9..].iter().enumerate() {
        let column = format!("sample {}", i + 1);
        match patient_id(Some(name)) {
            Ok(id) => {
                let patient = parsed.patients.intern(id);
                if ids.contains(&Some(patient)) {
                    problems.at(row, &column, "invalid-header", "the sample appears twice");
                    ids.push(None);
                } else {
                    ids.push(Some(patient));
                }
            }
            Err((code, message)) => {
                problems.at(row, &column, code, message);
                ids.push(None);
            }
        }
    }
    Some(ids)
}

/// The dbSNP id among a VCF line's IDs.
fn vcf_rsid(ids: &str) -> Option<String> {
    ids.split(';').find_map(Rsid::parse).map(Rsid::into_string)
}

/// The gene symbol of a VCF line's INFO (`GENE=APOE` or dbSNP's `GENEINFO=APOE:348`).
fn vcf_gene(info: &str) -> Option<String> {
    info.split(';')
        .find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            matches!(k, "GENE" | "GENEINFO" | "Gene")
                .then(|| v.split([':', '|', ',']).next().unwrap_or_default().to_owned())
        })
        .filter(|g| !g.is_empty() && g.len() <= 32)
}

/// Reads a VCF.
pub fn parse_vcf(body: &[u8], problems: &mut Problems) -> Parsed {
    let mut parsed = problems.parsed();
    let Ok(text) = std::str::from_utf8(body) else {
        problems.add(None, None, "invalid-vcf", "the file is not valid UTF-8 text");
        return parsed;
    };
    let mut samples: Option<Vec<Option<u32>>> = None;
    let mut index = HashMap::new();
    let mut calls = HashMap::new();
    let mut sample_names: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let row = n as u64 + 1;
        if line.starts_with("##") || line.trim().is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('#') {
            let Some(ids) = vcf_samples(header, row, &mut parsed, problems) else { return parsed };
            sample_names = (1..=ids.len()).map(|i| format!("sample {i}")).collect();
            samples = Some(ids);
            continue;
        }
        let Some(samples) = &samples else {
            problems.add(Some(row), None, "invalid-vcf", "a data line comes before the #CHROM header line");
            return parsed;
        };
        parsed.rows += 1;
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 9 + sample_names.len() {
            problems.add(
                Some(row),
                None,
                "invalid-row",
                format!("the line has {} columns where the header has {}", fields.len(), 9 + sample_names.len()),
            );
            continue;
        }
        let Some(chrom) = Chromosome::parse(fields[0]).map(Chromosome::into_string) else {
            problems.at(row, "CHROM", "invalid-value", "not a human chromosome (1–22, X, Y, MT, with or without chr)");
            continue;
        };
        let Some(pos) = variants::position(fields[1]) else {
            problems.at(row, "POS", "invalid-value", "not a position (a whole number from 1)");
            continue;
        };
        let Some(reference) = Allele::parse(fields[3]).map(Allele::into_string) else {
            problems.at(row, "REF", "invalid-value", "not an allele (A, C, G, T, N)");
            continue;
        };
        let (rsid, gene) = (vcf_rsid(fields[2]), vcf_gene(fields[7]));
        let Some(gt_at) = fields[8].split(':').position(|k| k == "GT") else {
            problems.at(row, "FORMAT", "invalid-value", "the FORMAT has no GT");
            continue;
        };
        // Alternate alleles that are real sequences; `*` and `.` name no variant.
        let alts: Option<Vec<(usize, String)>> = fields[4]
            .split(',')
            .enumerate()
            .filter(|(_, a)| !matches!(*a, "*" | "."))
            .map(|(i, a)| Allele::parse(a).map(Allele::into_string).filter(|a| *a != reference).map(|a| (i + 1, a)))
            .collect();
        let Some(alts) = alts else {
            problems.at(row, "ALT", "invalid-value", "not an alternate allele (A, C, G, T, N, different from REF)");
            continue;
        };
        let gts: Vec<&str> = fields[9..].iter().map(|s| s.split(':').nth(gt_at).unwrap_or(".")).collect();
        for (allele_index, alt) in alts {
            let key = VariantKey {
                chrom: chrom.clone(),
                pos,
                reference: reference.clone(),
                alt,
                rsid: rsid.clone(),
                gene: gene.clone(),
            };
            let variant = intern(&mut parsed, &mut index, key);
            for ((patient, gt), column) in samples.iter().zip(&gts).zip(&sample_names) {
                let Some(patient) = patient else { continue };
                match copies(gt, allele_index) {
                    Ok(alt_count) => push_call(
                        &mut parsed,
                        &mut calls,
                        GenotypeRow { patient: *patient, variant, alt_count },
                        row,
                        column,
                        problems,
                    ),
                    Err(()) => problems.at(row, column, "invalid-value", "not a genotype (e.g. 0/1, 1|1, ./.)"),
                }
            }
        }
    }
    if samples.is_none() {
        problems.add(None, None, "invalid-vcf", "the file has no #CHROM header line");
    }
    parsed
}

/// Reads a variant table.
pub fn parse_table(format: Format, body: &[u8], problems: &mut Problems) -> Parsed {
    let mut parsed = problems.parsed();
    let mut plan: Option<Plan> = None;
    let mut index = HashMap::new();
    let mut calls = HashMap::new();
    let header = table::read(format, body, problems, |header, row, cells, problems| {
        let plan = plan.get_or_insert_with(|| Plan::of(header, problems));
        if !plan.usable {
            return;
        }
        parsed.rows += 1;
        let cell = |at: Option<usize>| at.and_then(|i| cells.get(i).copied().flatten());
        let patient = match patient_id(cell(plan.patient)) {
            Ok(id) => parsed.patients.intern(id),
            Err((code, message)) => return problems.at(row, "patient_id", code, message),
        };
        let variant = match plan.variant {
            Some(at) => cell(Some(at)).and_then(VariantPosition::parse),
            None => (|| {
                let [chrom, pos, reference, alt] = [plan.chrom, plan.pos, plan.reference, plan.alt].map(cell);
                VariantPosition::from_parts(chrom?, pos?, reference?, alt?)
            })(),
        };
        let Some((chrom, pos, reference, alt)) = variant.map(VariantPosition::into_parts) else {
            let column = if plan.variant.is_some() { "variant" } else { "chrom" };
            return problems.at(
                row,
                column,
                "invalid-value",
                "not a variant (chromosome, position, reference and alternate allele, e.g. 19-44908684-T-C)",
            );
        };
        let rsid = cell(plan.rsid).map(str::to_owned);
        if rsid.as_deref().is_some_and(|r| Rsid::parse(r).is_none()) {
            return problems.at(row, "rsid", "invalid-value", "not a dbSNP id (rs followed by digits)");
        }
        let gene = cell(plan.gene).map(str::to_owned);
        if gene.as_deref().is_some_and(|g| g.len() > 32) {
            return problems.at(row, "gene", "invalid-value", "not a gene symbol (at most 32 characters)");
        }
        let Some(gt) = cell(plan.genotype) else {
            return problems.at(
                row,
                "genotype",
                "missing-value",
                "the genotype is missing (use ./. for a missing call)",
            );
        };
        let alt_count = match gt {
            "0" | "1" | "2" if !gt.contains(['/', '|']) => Some(gt.parse::<i16>().expect("digit")),
            _ if gt.split(['/', '|']).any(|a| !matches!(a, "0" | "1" | ".")) => {
                return problems.at(
                    row,
                    "genotype",
                    "invalid-value",
                    "not a biallelic genotype (0/1, 1|1, ./. or a count 0–2)",
                );
            }
            _ => match copies(gt, 1) {
                Ok(count) => count,
                Err(()) => {
                    return problems.at(
                        row,
                        "genotype",
                        "invalid-value",
                        "not a genotype (0/1, 1|1, ./. or a count 0–2)",
                    );
                }
            },
        };
        let variant = intern(&mut parsed, &mut index, VariantKey { chrom, pos, reference, alt, rsid, gene });
        push_call(&mut parsed, &mut calls, GenotypeRow { patient, variant, alt_count }, row, "genotype", problems);
    });
    if let Some(header) = header
        && plan.is_none()
    {
        Plan::of(&header, problems);
        problems.add(None, None, "empty-table", "the table has no data rows");
    }
    parsed
}

struct Plan {
    patient: Option<usize>,
    variant: Option<usize>,
    chrom: Option<usize>,
    pos: Option<usize>,
    reference: Option<usize>,
    alt: Option<usize>,
    rsid: Option<usize>,
    gene: Option<usize>,
    genotype: Option<usize>,
    usable: bool,
}

impl Plan {
    fn of(header: &table::Header, problems: &mut Problems) -> Self {
        let at = |name: &str| header.index(name);
        let mut plan = Self {
            patient: at("patient_id"),
            variant: at("variant"),
            chrom: at("chrom"),
            pos: at("pos"),
            reference: at("ref"),
            alt: at("alt"),
            rsid: at("rsid"),
            gene: at("gene"),
            genotype: at("genotype"),
            usable: true,
        };
        let coordinates = plan.chrom.is_some() && plan.pos.is_some() && plan.reference.is_some() && plan.alt.is_some();
        let mut missing = |name: &str| {
            problems.add(Some(1), Some(name), "missing-column", "a required column is missing");
            false
        };
        let mut usable = true;
        if plan.patient.is_none() {
            usable = missing("patient_id");
        }
        if plan.genotype.is_none() {
            usable = missing("genotype");
        }
        if plan.variant.is_none() && !coordinates {
            usable = missing("variant");
        }
        for name in &header.columns {
            if !["patient_id", "variant", "chrom", "pos", "ref", "alt", "rsid", "gene", "genotype"]
                .contains(&name.as_str())
            {
                problems.add(
                    Some(1),
                    Some(name),
                    "unknown-column",
                    "not a column of a variant table (patient_id, variant or chrom/pos/ref/alt, rsid, gene, genotype)",
                );
            }
        }
        plan.usable = usable;
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VCF: &str = "##fileformat=VCFv4.2\n\
        ##INFO=<ID=GENE,Number=1,Type=String,Description=\"Gene\">\n\
        #CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tP1\tP2\tP3\n\
        chr19\t44908684\trs429358\tT\tC\t.\tPASS\tGENE=APOE\tGT:DP\t0/1:30\t1|1:28\t./.:0\n\
        1\t1000\t.\tA\tG,T\t.\tPASS\t.\tGT\t1/2\t0/0\t2/2\n";

    #[test]
    fn vcf_calls_count_alternate_alleles_and_split_multiallelic_sites() {
        let mut problems = Problems::default();
        let parsed = parse_vcf(VCF.as_bytes(), &mut problems);
        assert!(problems.is_empty(), "{:?}", problems.into_list());
        assert_eq!(parsed.rows, 2);
        assert_eq!(parsed.patients.len(), 3);
        assert_eq!(parsed.variants.len(), 3);
        let apoe = &parsed.variants[0];
        assert_eq!(
            (apoe.chrom.as_str(), apoe.pos, apoe.rsid.as_deref(), apoe.gene.as_deref()),
            ("19", 44_908_684, Some("rs429358"), Some("APOE"))
        );
        let counts: Vec<(u32, u32, Option<i16>)> =
            parsed.genotypes.iter().map(|g| (g.variant, g.patient, g.alt_count)).collect();
        assert_eq!(
            counts,
            [
                (0, 0, Some(1)),
                (0, 1, Some(2)),
                (0, 2, None),
                (1, 0, Some(1)),
                (1, 1, Some(0)),
                (1, 2, Some(0)),
                (2, 0, Some(1)),
                (2, 1, Some(0)),
                (2, 2, Some(2)),
            ]
        );
    }

    #[test]
    fn gzip_vcf_is_read_like_plain_and_bombs_are_stopped() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(VCF.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(&*gunzip(&gz, 1 << 20, None).unwrap(), VCF.as_bytes());
        assert!(matches!(gunzip(&gz, 10, None), Err(GunzipError::TooLarge)));
        assert!(matches!(gunzip(&gz[..gz.len() / 2], 1 << 20, None), Err(GunzipError::Corrupt)));
        let mut narrow = ShapeGuard::vcf(1 << 20, 3);
        assert!(
            matches!(gunzip(&gz, 1 << 20, Some(&mut narrow)), Err(GunzipError::Shape(e)) if e.code() == "too-many-columns")
        );
    }

    #[test]
    fn bad_vcf_lines_are_reported_with_line_and_column() {
        let body = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tP1\n\
            chr99\t5\t.\tA\tG\t.\t.\t.\tGT\t0/1\n\
            1\t5\t.\tA\tA\t.\t.\t.\tGT\t0/1\n\
            1\t6\t.\tA\tG\t.\t.\t.\tGT\t0/x\n\
            1\t7\t.\tA\tG\t.\t.\t.\tDP\t3\n";
        let mut problems = Problems::default();
        parse_vcf(body.as_bytes(), &mut problems);
        let list: Vec<_> = problems.into_list().into_iter().map(|p| (p.row, p.column, p.code)).collect();
        assert_eq!(
            list,
            [
                (Some(2), Some("CHROM".into()), "invalid-value"),
                (Some(3), Some("ALT".into()), "invalid-value"),
                (Some(4), Some("sample 1".into()), "invalid-value"),
                (Some(5), Some("FORMAT".into()), "invalid-value"),
            ]
        );
    }

    #[test]
    fn variant_tables_take_compact_or_split_coordinates() {
        let body = "patient_id,variant,rsid,gene,genotype\np1,19-44908684-T-C,rs429358,APOE,0/1\np2,chr19:44908684:T:C,,,2\np1,19-44908684-T-C,,,1/1\n";
        let mut problems = Problems::default();
        let parsed = parse_table(Format::Csv, body.as_bytes(), &mut problems);
        let list = problems.into_list();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!((list[0].row, list[0].code), (Some(4), "duplicate-call"));
        assert_eq!(parsed.variants.len(), 1);
        assert_eq!(parsed.genotypes.iter().map(|g| g.alt_count).collect::<Vec<_>>(), [Some(1), Some(2)]);
        assert_eq!(parsed.variants[0].chrom, "19");
    }
}
