#!/bin/sh
# Regenerates the input.csv of the encoding cases from the UTF-8 text below with iconv
# (glibc, package libc-bin), never with medlake code. Run from agent/normalize/testdata:
#   sh encode-inputs.sh [dir]
# writes dir/<case>/input.csv (dir defaults to cases; each <case> folder must exist).
# TestEncodedInputs runs it into a temporary dir and checks the committed files match.
# then check `git diff --stat` and review expected.out with `go test -run TestCases -update`.
set -eu
out=${1:-cases}

# Names with accents, a euro amount, a quoted field holding a line break, a row without
# its required name (a reject, to show line numbers). LF endings here;
# each case converts them as its name says.
patients='patient_id;name;city;fee
1;José García;Málaga;12,50 €
2;Zoë Brontë;Montréal;0,99 €
3;Müller, Jürgen;Köln;"100 €
paid"
4;Ñúñez Peña;Cádiz;
5;;Zürich;1 €
'
# Latin-1 has no euro sign.
patients_latin1='patient_id;name;city;fee
1;José García;Málaga;12,50 EUR
2;Zoë Brontë;Montréal;0,99 EUR
3;Müller, Jürgen;Köln;"100 £
paid"
4;Ñúñez Peña;Cádiz;
5;;Zürich;1 EUR
'

crlf() { sed 's/$/\r/'; }       # LF -> CRLF
cr() { tr '\n' '\r'; }          # LF -> lone CR (classic Mac OS)

printf '%s' "$patients" | crlf | iconv -f utf-8 -t windows-1252 >"$out"/enc_windows1252_crlf/input.csv
printf '%s' "$patients_latin1" | iconv -f utf-8 -t latin1 >"$out"/enc_latin1_lf/input.csv
# glibc's UTF-16 writes a byte order mark and little-endian units.
printf '%s' "$patients" | crlf | iconv -f utf-8 -t utf-16 >"$out"/enc_utf16_bom_crlf/input.csv
printf '%s' "$patients" | iconv -f utf-8 -t utf-16be >"$out"/enc_utf16be_nobom/input.csv
printf '%s' "$patients" | cr | iconv -f utf-8 -t utf-16le >"$out"/enc_utf16le_nobom_cr/input.csv
# UTF-8 with a byte order mark (as Excel writes it), declared windows-1252: the BOM wins.
{ printf '\357\273\277'; printf '%s' "$patients" | crlf; } >"$out"/enc_utf8_bom_declared_windows1252/input.csv
printf '%s' "$patients" | cr | iconv -f utf-8 -t windows-1252 >"$out"/enc_windows1252_cr/input.csv
