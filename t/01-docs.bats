#!/usr/bin/env bats
# The documentation agrees with the programs: every program the Makefile
# builds has its page; --help and the page name the same long options; the
# exit statuses in the pages are lib/exitcode.h's; the pages lint clean; and
# `make install` installs every page there is.
#
# Everything is read from the Makefile, the header and the pages themselves,
# so a new program or page is checked without changing this file.

load helper

REPO="$BATS_TEST_DIRNAME/.."

# make_var NAME: a Makefile variable's value, as make itself expands it.
make_var() {
	MAKEFLAGS= make -s --no-print-directory -C "$REPO" \
		--eval "print-var-$1: ; @echo \$($1)" "print-var-$1"
}

# The programs the Makefile builds and installs, one per line.
programs() {
	local v
	for v in PLUMBING PORCELAIN FRONT SERVER SCRIPTS; do
		make_var "$v" || return 1
	done | tr ' ' '\n' | sed '/^$/d'
}

# section PAGE NAME: the source lines of one .Sh section of a page.
section() {
	awk -v want="$2" '
		/^\.Sh / { name = $0; sub(/^\.Sh +/, "", name); gsub(/"/, "", name); on = (name == want); next }
		on { print }
	' "$1"
}

# listed_statuses PAGE: the numbers that head the items (.It N) of the
# page's EXIT STATUS section, one per line, sorted.
listed_statuses() {
	section "$1" "EXIT STATUS" | awk '/^\.It[ \t]+[0-9]+([ \t]|$)/ { print $2 }' | sort -un
}

# The statuses lib/exitcode.h defines, one per line, sorted.
defined_statuses() {
	sed -nE 's/^[[:space:]]*EXIT_[A-Z_]+[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p' \
		"$REPO/lib/exitcode.h" | sort -un
}

# Long options: every --name token of a text, and every `Fl -name` of a page.
help_options() {
	grep -oE -- '--[A-Za-z0-9][-A-Za-z0-9]*' | sort -u
}
page_options() {
	grep -oE '(^\.|[[:space:]])Fl -[A-Za-z0-9][-A-Za-z0-9]*' "$1" | sed -E 's/.*Fl -/--/' | sort -u
}

@test "the Makefile lists programs, and each has a page with the usual sections" {
	local p s missing=
	run -0 programs
	[ -n "$output" ]
	for p in $output; do
		if [ ! -f "$REPO/man/$p.1" ]; then
			missing="$missing
  man/$p.1 does not exist"
			continue
		fi
		for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES "SEE ALSO"; do
			grep -qx "\.Sh $s" "$REPO/man/$p.1" ||
				missing="$missing
  man/$p.1 has no $s section"
		done
	done
	if [ -n "$missing" ]; then
		echo "pages missing or incomplete:$missing" >&2
		return 1
	fi
}

@test "--help and the man page name the same long options, for every program" {
	local p help page diff=
	run -0 programs
	for p in $output; do
		[ -f "$REPO/man/$p.1" ] || continue # the first test names it
		help=$("$p" --help | help_options) || { diff="$diff
$p: --help failed"; continue; }
		page=$(page_options "$REPO/man/$p.1")
		if [ "$help" != "$page" ]; then
			diff="$diff
$p: only in --help: $(comm -23 <(echo "$help") <(echo "$page") | paste -sd' ')
$p: only in man/$p.1: $(comm -13 <(echo "$help") <(echo "$page") | paste -sd' ')"
		fi
	done
	if [ -n "$diff" ]; then
		echo "options disagree:$diff" >&2
		return 1
	fi
}

@test "sluice(7) lists every exit status of lib/exitcode.h, and the pages list no other" {
	local defined page code bad=
	defined=$(defined_statuses)
	[ "$(echo "$defined" | wc -l)" -ge 5 ]
	for code in $defined; do
		listed_statuses "$REPO/man/sluice.7" | grep -qx "$code" ||
			bad="$bad
  sluice.7: status $code of lib/exitcode.h is not in EXIT STATUS"
	done
	for page in "$REPO"/man/*.1 "$REPO/man/sluice.7"; do
		if [ -z "$(listed_statuses "$page")" ]; then
			bad="$bad
  ${page##*/}: no .It <status> items in EXIT STATUS"
			continue
		fi
		for code in $(listed_statuses "$page"); do
			echo "$defined" | grep -qx "$code" ||
				bad="$bad
  ${page##*/}: status $code is not defined in lib/exitcode.h"
		done
	done
	if [ -n "$bad" ]; then
		echo "exit statuses:$bad" >&2
		return 1
	fi
}

@test "every exit status a program's --help names is on its man page" {
	local p code named bad=
	run -0 programs
	for p in $output; do
		[ -f "$REPO/man/$p.1" ] || continue
		# The statuses follow "Exit:" in the usage text.
		named=$("$p" --help | sed -n '/Exit:/,$p' | sed '1s/.*Exit://' |
			grep -oE '(^|[^-0-9A-Za-z])[0-9]+' | grep -oE '[0-9]+' | sort -un)
		for code in $named; do
			listed_statuses "$REPO/man/$p.1" | grep -qx "$code" ||
				bad="$bad
  $p: --help names status $code, man/$p.1 does not list it"
		done
	done
	if [ -n "$bad" ]; then
		echo "exit statuses:$bad" >&2
		return 1
	fi
}

@test "every page passes mandoc -T lint -W warning" {
	run mandoc -T lint -W warning "$REPO"/man/*.[1-9]
	if [ "$status" -ne 0 ] || [ -n "$output" ]; then
		echo "$output" >&2
		return 1
	fi
}

@test "the overview pages exist, sluice(7) refers to every page, and MANPAGES lists them all" {
	local f name sec manpages bad=
	[ -f "$REPO/man/sluice.7" ]
	[ -f "$REPO/man/sluice-records.5" ]
	run -0 make_var MANPAGES
	manpages=$(echo "$output" | tr ' ' '\n' | sed '/^$/d')
	for f in "$REPO"/man/*.[1-9]; do
		f=man/${f##*/}
		echo "$manpages" | grep -qxF "$f" ||
			bad="$bad
  $f is not in the Makefile's MANPAGES (make install would leave it out)"
		name=${f#man/}
		sec=${name##*.}
		name=${name%.*}
		[ "$f" = man/sluice.7 ] && continue
		section "$REPO/man/sluice.7" "SEE ALSO" | grep -qxE "\.Xr $name $sec( ,)?" ||
			bad="$bad
  sluice.7 SEE ALSO does not refer to $name($sec)"
	done
	for f in $manpages; do
		[ -f "$REPO/$f" ] ||
			bad="$bad
  MANPAGES lists $f, which does not exist"
	done
	if [ -n "$bad" ]; then
		echo "man pages:$bad" >&2
		return 1
	fi
}
