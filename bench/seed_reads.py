#!/usr/bin/env python3
"""Seeds a running server for the read benchmark through its own API (GraphQL and the
device scan endpoint), so it works the same on SQLite and PostgreSQL.

    seed_reads.py BASE_URL ADMIN_USER ADMIN_PASSWORD [STUDENTS] [SESSIONS]

Creates one course taught by a new teacher to one section of STUDENTS (500) students and a
device, then runs SESSIONS (40) sessions: open, scan nine students in ten (a rotating tenth
stays away), close (the rest are marked absent). Prints KEY=VALUE lines for a shell:
TOKEN (the teacher's access token), SESSION_ID (the last session), COURSE_ID.
Standard library only; one keep-alive connection.
"""
import datetime
import http.client
import json
import sys
import urllib.parse


def main():
    base, admin_user, admin_password = sys.argv[1:4]
    students = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    sessions = int(sys.argv[5]) if len(sys.argv) > 5 else 40
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)

    def post(path, body, token=None):
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = "Bearer " + token
        conn.request("POST", path, json.dumps(body), headers)
        res = conn.getresponse()
        return res.status, json.loads(res.read() or b"null")

    def gql(query, variables=None, token=None):
        status, body = post("/graphql", {"query": query, "variables": variables or {}}, token)
        if status != 200 or body.get("errors"):
            sys.exit(f"seed: {query[:60]}... answered {status} {body}")
        return body["data"]

    login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }"
    admin = gql(login, {"u": admin_user, "p": admin_password})["login"]["accessToken"]
    dep = gql("mutation { createDepBatch(input: {dep: \"Reads\", batch: \"2026\"}) { id } }", token=admin)
    section = gql(
        "mutation($d: ID!) { createSection(input: {name: \"R\", depBatchId: $d}) { id } }",
        {"d": dep["createDepBatch"]["id"]},
        admin,
    )["createSection"]["id"]
    teacher = gql(
        "mutation { createTeacher(input: {teacherCode: \"TR\", firstName: \"Read\", lastName: \"Er\","
        " username: \"reader\", password: \"reader-password-1\"}) { id } }",
        token=admin,
    )["createTeacher"]["id"]
    course = gql(
        "mutation($t: ID!, $s: ID!) { createCourse(input: {name: \"Reads\", code: \"RD\", teacherId: $t,"
        " sectionIds: [$s]}) { id } }",
        {"t": teacher, "s": section},
        admin,
    )["createCourse"]["id"]
    key = gql(
        "mutation { registerDevice(input: {deviceId: \"DEV-R\"}) { apiKey } }", token=admin
    )["registerDevice"]["apiKey"]
    ids = []
    for n in range(students):
        ids.append(
            gql(
                "mutation($c: String!, $s: ID!) { createStudent(input: {studentCode: $c, firstName: \"First\","
                " lastName: \"Last\", sectionId: $s}) { id } }",
                {"c": f"R{n:05d}", "s": section},
                admin,
            )["createStudent"]["id"]
        )
    token = gql(login, {"u": "reader", "p": "reader-password-1"})["login"]["accessToken"]
    session = None
    for s in range(sessions):
        opened = gql(
            "mutation($c: ID!) { createSession(input: {courseId: $c, deviceId: \"DEV-R\"}) { id date } }",
            {"c": course},
            token,
        )["createSession"]
        session = opened["id"]
        now = datetime.datetime.now().strftime("%H:%M:%S")
        for i, student in enumerate(ids):
            if (i + s) % 10 == 0:
                continue
            status, body = post(
                "/api/attendance/scan",
                {"student_id": int(student), "date": opened["date"], "time": now},
                key,
            )
            if status != 201:
                sys.exit(f"seed: scan answered {status} {body}")
        gql("mutation($id: ID!) { closeSession(id: $id) { markedAbsent } }", {"id": session}, token)
    print(f"TOKEN={token}")
    print(f"SESSION_ID={session}")
    print(f"COURSE_ID={course}")


if __name__ == "__main__":
    main()
