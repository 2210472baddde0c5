-- Duties coming due: the PI is reminded 30 days before, 7 days before, and
-- once overdue. `reminded_within` is the smallest of those stages (30, 7, 0)
-- already reminded, so each stage reminds once whatever the job's schedule.
alter table obligation add column reminded_within integer
    constraint obligation_reminded_within_check check (reminded_within in (0, 7, 30));
