#!/usr/bin/python3
"""The docs name only what exists (run by tests/run.sh; also by hand).

For README.md and docs/*.md:
  - every `streamml <command>` in code (fenced blocks and `spans`) is a command
    that `streamml <command> --help` accepts, and every --option written after
    it on that line is in that help text;
  - every streamml-<worker> named is a program that was built;
  - every configuration key named in code is in the config table
    (`streamml-transactions --help`, the table in common/cfg.c); `prefix.*`
    and `prefix.<x>` must match at least one key;
  - every relative link resolves to a file, and a #anchor to a heading there.
Prints one line per problem and exits 1 if there is any.
usage: check_docs.py [REPO_ROOT [BUILD_DIR]]
"""
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), '..'))
BUILD = sys.argv[2] if len(sys.argv) > 2 else os.environ.get('STREAMML_BUILD', 'build')
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)

# Prefixes of streamml's own keys; a code span starting with one of these and
# a dot is read as a configuration key.
KEY_PREFIXES = ('input', 'output', 'dlq', 'schemas', 'state', 'redis', 'model', 'decision',
                'worker', 'monitor', 'metrics', 'schema.registry', 'images', 'clickstream',
                'experiment', 'log', 'explain')
# Tokens that look like keys but are file names.
FILE_EXT = re.compile(r'\.(json|jsonl|onnx|avsc|c|h|py|md|csv|npy|html|yml|yaml|txt|png|jpg|'
                      r'conf|avro|sh|ubj|pt|gz|tsv|log|so|a|o)$')


def run_help(args):
    try:
        p = subprocess.run(args + ['--help'], capture_output=True, text=True, timeout=30,
                           cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as ex:
        return None, str(ex)
    return (p.stdout + p.stderr) if p.returncode == 0 else None, p.stdout + p.stderr


def doc_files():
    files = [os.path.join(ROOT, 'README.md')]
    d = os.path.join(ROOT, 'docs')
    files += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith('.md'))
    return files


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r'[^\w\- ]', '', s)
    return s.replace(' ', '-')


def anchors(path, cache={}):
    if path not in cache:
        out, fence = set(), False
        for line in open(path, encoding='utf-8'):
            if line.startswith('```'):
                fence = not fence
            elif not fence and re.match(r'#{1,6} ', line):
                out.add(slug(line.lstrip('#')))
        cache[path] = out
    return cache[path]


def code_pieces(text):
    """(line number, code) for each fenced line and each `span` outside fences."""
    fence = False
    for n, line in enumerate(text.split('\n'), 1):
        if line.startswith('```'):
            fence = not fence
            continue
        if fence:
            yield n, line.split(' #')[0] if not line.lstrip().startswith('#') else ''
        else:
            for m in re.finditer(r'`([^`]+)`', line):
                yield n, m.group(1)


def main():
    problems = []
    helps = {}
    top, why = run_help([os.path.join(BUILD, 'streamml')])
    if top is None:
        print('check_docs: %s/streamml --help failed: %s' % (BUILD, why.strip()[:200]))
        return 1
    keys_help, why = run_help([os.path.join(BUILD, 'streamml-transactions')])
    if keys_help is None:
        print('check_docs: streamml-transactions --help failed: %s' % why.strip()[:200])
        return 1
    keys = set(re.findall(r'^  ([a-z][a-z0-9_.]+)\s+default ', keys_help, re.M))
    if len(keys) < 50:
        print('check_docs: only %d keys read from streamml-transactions --help' % len(keys))
        return 1

    def cmd_help(cmd):
        if cmd not in helps:
            helps[cmd] = run_help([os.path.join(BUILD, 'streamml'), cmd])[0]
        return helps[cmd]

    # Topic names (clickstream.dlq) look like keys: deploy/topics.txt lists them.
    topics = set()
    for line in open(os.path.join(ROOT, 'deploy', 'topics.txt'), encoding='utf-8'):
        if line.strip() and not line.startswith('#'):
            topics.add(line.split()[0])

    n_cmd = n_key = n_link = 0
    for path in doc_files():
        rel = os.path.relpath(path, ROOT)
        text = open(path, encoding='utf-8').read()
        # Deliberate typos a page shows (did-you-mean examples) are declared:
        # <!-- check_docs typos: redis.prot consme -->
        typos = set()
        for m in re.finditer(r'<!-- check_docs typos: ([^>]*)-->', text):
            typos.update(m.group(1).split())
        for n, code in code_pieces(text):
            where = '%s:%d' % (rel, n)
            for m in re.finditer(r'(?:^|[\s/(])streamml ([a-z][a-z-]*)((?:[^|;&)]*)?)', code):
                cmd, rest = m.group(1), m.group(2)
                if cmd in typos:
                    continue
                n_cmd += 1
                h = cmd_help(cmd)
                if h is None:
                    problems.append('%s: `streamml %s` is not a command' % (where, cmd))
                    continue
                for opt in re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]*)', rest):
                    if not re.search(r'(?<![\w-])' + re.escape(opt) + r'(?![\w-])', h):
                        problems.append('%s: `streamml %s %s`: no such option in its --help'
                                        % (where, cmd, opt))
            for m in re.finditer(r'(?<![\w/.-])streamml-([a-z]+)\b(?![-:])', code):
                if not os.access(os.path.join(BUILD, 'streamml-' + m.group(1)), os.X_OK):
                    problems.append('%s: no program streamml-%s' % (where, m.group(1)))
            for m in re.finditer(r'(?<![\w/.$<{-])((?:%s)\.[a-z0-9_.*<>{}-]*[a-z0-9_*>}])'
                                 % '|'.join(re.escape(p) for p in KEY_PREFIXES), code):
                k = m.group(1)
                if FILE_EXT.search(k) or k in topics or code[m.end():m.end() + 1] in ('(', '/'):
                    continue
                if code[:m.start()].rstrip().endswith('kafka.') or k in typos:
                    continue
                n_key += 1
                stem = re.split(r'[*<{]', k)[0]
                if stem != k:
                    if not any(x.startswith(stem) for x in keys):
                        problems.append('%s: no configuration key matches `%s`' % (where, k))
                elif k not in keys:
                    problems.append('%s: `%s` is not a configuration key' % (where, k))
        for n, line in enumerate(text.split('\n'), 1):
            for m in re.finditer(r'\]\(([^)\s]+)\)', line):
                target = m.group(1)
                if re.match(r'[a-z]+:', target):
                    continue
                n_link += 1
                file_part, _, anchor = target.partition('#')
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                    if file_part else path
                if not os.path.exists(dest):
                    problems.append('%s:%d: link %s: no such file' % (rel, n, target))
                elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
                    problems.append('%s:%d: link %s: no such heading' % (rel, n, target))
    for p in problems:
        print('check_docs: ' + p)
    print('check_docs: %d command uses, %d key uses, %d links checked; %d problem(s)'
          % (n_cmd, n_key, n_link, len(problems)))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
