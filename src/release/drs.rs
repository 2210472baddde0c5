//! A release as GA4GH DRS objects: the release is a bundle, each folder of it
//! a bundle, each file a blob.
//!
//! Object ids are deterministic and opaque: the release's id (32 hex digits)
//! for the release, followed by `.` and the first 32 hex digits of the
//! SHA-256 of `file:{path}` or `dir:{path}/` for what it holds. They name no
//! registry identifier (paths hold only the project's own pseudonyms and
//! UIDs, and only hashed), and the same file keeps its id across requests.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{SHA256, digest};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::ApiError;

/// A file of a release, as listed.
#[derive(Debug, Clone)]
pub struct ListedFile {
    pub path: String,
    pub size: i64,
    pub sha256: String,
    pub media_type: String,
}

/// Every file of `extract_id`, by path.
pub async fn files(db: impl PgExecutor<'_>, extract_id: Uuid) -> Result<Vec<ListedFile>, ApiError> {
    Ok(sqlx::query_as!(
        ListedFile,
        "select path, size, sha256, media_type from extract_file where extract_id = $1 order by path",
        extract_id
    )
    .fetch_all(db)
    .await?)
}

/// What a DRS object id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectId {
    pub extract_id: Uuid,
    /// The hash part naming a folder or file; `None` for the release itself.
    pub member: Option<[u8; 16]>,
}

impl ObjectId {
    /// Reads an id; anything not of the form is no object of this registry.
    pub fn parse(id: &str) -> Option<Self> {
        let (release, member) = match id.split_once('.') {
            Some((release, member)) => (release, Some(member)),
            None => (id, None),
        };
        if release.len() != 32 || !release.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let extract_id = Uuid::try_parse(release).ok()?;
        let member = match member {
            None => None,
            Some(m) if m.len() == 32 && m.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                Some(hex::decode(m).ok()?.try_into().ok()?)
            }
            Some(_) => return None,
        };
        Some(Self { extract_id, member })
    }
}

fn member_hash(kind: &str, path: &str) -> [u8; 16] {
    let full = digest(&SHA256, format!("{kind}:{path}").as_bytes());
    full.as_ref()[..16].try_into().expect("a SHA-256 has 32 bytes")
}

/// A folder of a release (the release itself at the root) or one of its files.
#[derive(Debug)]
pub enum Node<'a> {
    Folder(Folder<'a>),
    File(&'a ListedFile),
}

/// A folder: its path (`""` at the root, else ending in `/`) and what it holds, by name.
#[derive(Debug, Default)]
pub struct Folder<'a> {
    pub path: String,
    pub children: BTreeMap<&'a str, Node<'a>>,
}

impl<'a> Folder<'a> {
    /// The folder tree of a release's files.
    pub fn tree(files: &'a [ListedFile]) -> Self {
        let mut root = Folder::default();
        for file in files {
            let mut folder = &mut root;
            let mut segments = file.path.split('/').peekable();
            while let Some(segment) = segments.next() {
                if segments.peek().is_none() {
                    folder.children.insert(segment, Node::File(file));
                    break;
                }
                let path = format!("{}{segment}/", folder.path);
                let next = folder
                    .children
                    .entry(segment)
                    .or_insert_with(|| Node::Folder(Folder { path, children: BTreeMap::new() }));
                let Node::Folder(next) = next else { break };
                folder = next;
            }
        }
        root
    }

    /// The folder or file `member` names, anywhere below.
    pub fn find(&self, member: [u8; 16]) -> Option<&Node<'a>> {
        self.children.values().find_map(|node| {
            if node.member() == member {
                return Some(node);
            }
            match node {
                Node::Folder(folder) => folder.find(member),
                Node::File(_) => None,
            }
        })
    }
}

impl Node<'_> {
    /// The hash part of its id.
    pub fn member(&self) -> [u8; 16] {
        match self {
            Node::Folder(folder) => member_hash("dir", &folder.path),
            Node::File(file) => member_hash("file", &file.path),
        }
    }

    /// Bytes of the file, or of every file below the folder.
    pub fn size(&self) -> i64 {
        match self {
            Node::Folder(folder) => folder.children.values().map(Node::size).sum(),
            Node::File(file) => file.size,
        }
    }

    /// The file's SHA-256; a folder's, as DRS defines a bundle's: the SHA-256
    /// of the sorted hex checksums of what it directly holds, concatenated.
    pub fn sha256(&self) -> String {
        match self {
            Node::File(file) => file.sha256.clone(),
            Node::Folder(folder) => {
                let mut sums: Vec<String> = folder.children.values().map(Node::sha256).collect();
                sums.sort();
                hex::encode(digest(&SHA256, sums.concat().as_bytes()))
            }
        }
    }
}

/// The id of `member` of release `extract_id` (the release itself when `None`).
pub fn object_id(extract_id: Uuid, member: Option<[u8; 16]>) -> String {
    match member {
        None => extract_id.simple().to_string(),
        Some(m) => format!("{}.{}", extract_id.simple(), hex::encode(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha256: &str) -> ListedFile {
        ListedFile { path: path.into(), size: 10, sha256: sha256.into(), media_type: "text/plain".into() }
    }

    #[test]
    fn ids_round_trip_and_anything_else_names_nothing() {
        let release = Uuid::new_v4();
        let files = [file("README.md", "aa"), file("dicom/1.2/3.4/5.6.dcm", "bb"), file("dicom/1.2/3.4/5.7.dcm", "cc")];
        let tree = Folder::tree(&files);
        let Some(Node::Folder(dicom)) = tree.children.get("dicom") else { panic!("a dicom folder") };
        assert_eq!(dicom.path, "dicom/");
        for node in [tree.children.get("README.md").unwrap(), tree.children.get("dicom").unwrap()] {
            let id = object_id(release, Some(node.member()));
            let parsed = ObjectId::parse(&id).unwrap();
            assert_eq!(parsed.extract_id, release);
            assert_eq!(tree.find(parsed.member.unwrap()).unwrap().member(), node.member());
            assert!(!id.contains("dicom") && !id.contains("1.2"), "{id}");
        }
        assert_eq!(ObjectId::parse(&object_id(release, None)).unwrap().member, None);
        for bad in ["", "x", &format!("{}.", release.simple()), &release.to_string(), "../etc/passwd"] {
            assert_eq!(ObjectId::parse(bad), None, "{bad}");
        }
        assert_eq!(tree.children.get("dicom").unwrap().size(), 20);
    }

    #[test]
    fn a_bundle_checksum_is_that_of_its_sorted_member_checksums() {
        let files = [file("b", "bb"), file("a", "cc"), file("c", "aa")];
        let tree = Node::Folder(Folder::tree(&files));
        assert_eq!(tree.sha256(), hex::encode(digest(&SHA256, b"aabbcc")));
    }
}
