-- Earlier membership periods of a project's members. A removed member who is
-- invited again gets a new period on their project_member row; the period
-- that ended moves here first, so the project keeps every span during which
-- someone was a member (who invited them, when they accepted, when and by
-- whom they were removed) and not only the latest.
create table project_member_period (
    project_id  uuid not null references project (project_id),
    username    text not null,
    role        text not null constraint project_member_period_role_check check (role in ('pi', 'collaborator')),
    invited_by  text not null,
    invited_at  timestamptz not null,
    accepted_at timestamptz,
    removed_at  timestamptz not null,
    removed_by  text,
    primary key (project_id, username, invited_at)
);
