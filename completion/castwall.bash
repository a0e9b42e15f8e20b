# bash completion for castwall: asks castwall itself (click's completion protocol),
# so commands, options and the --format names are always those of the installed version.
_castwall() {
    local IFS=$'\n' line kind value
    COMPREPLY=()
    for line in $(COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD \
                  _CASTWALL_COMPLETE=bash_complete "$1" 2>/dev/null); do
        kind=${line%%,*}
        value=${line#*,}
        case $kind in
            dir) COMPREPLY=(); compopt -o dirnames; return ;;
            file) COMPREPLY=(); compopt -o default; return ;;
            plain) COMPREPLY+=("$value") ;;
        esac
    done
}
complete -o nosort -F _castwall castwall
