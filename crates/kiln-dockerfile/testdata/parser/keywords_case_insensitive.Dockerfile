from alpine AS Base
run echo
Cmd ["a"]
