; NSIS installer of the "AI Background" OBS plugin for Windows x64 (OBS Studio 29 or newer).
; Built by scripts/package.sh (Debian package `nsis`):
;   makensis -DVERSION=0.1.0 -DSTAGE=<zip layout folder> -DOUTFILE=<installer.exe> obs-ai-background.nsi
; Installs for all users into OBS's own plugin folders (what OBS 29 loads on Windows):
;   <OBS>\obs-plugins\64bit\obs-ai-background.dll
;   <OBS>\data\obs-plugins\obs-ai-background\ (effect, locale)
; where <OBS> is the folder OBS's installer recorded (HKLM\SOFTWARE\OBS Studio), else
; C:\Program Files\obs-studio. Writes an uninstaller (<OBS>\uninstall-obs-ai-background.exe,
; also listed under Apps / Programs and Features). Silent: /S, with /D=<OBS folder> to choose.

Unicode true
Target amd64-unicode
SetCompressor /SOLID lzma
RequestExecutionLevel admin
ManifestSupportedOS all

!define NAME "obs-ai-background"
!define DISPLAY "AI Background for OBS Studio"
!define UNINSTALLER "uninstall-${NAME}.exe"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${NAME}"

Name "${DISPLAY} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$PROGRAMFILES64\obs-studio"
InstallDirRegKey HKLM "Software\OBS Studio" ""
LicenseData "${STAGE}\data\obs-plugins\${NAME}\LICENSE"
ShowInstDetails show

Page license
Page directory
Page instfiles
UninstPage uninstConfirm
UninstPage instfiles

Function .onInit
  SetRegView 64
  SetShellVarContext all
FunctionEnd

Function un.onInit
  SetRegView 64
  SetShellVarContext all
FunctionEnd

Section "Install"
  SetOutPath "$INSTDIR\obs-plugins\64bit"
  File "${STAGE}\obs-plugins\64bit\${NAME}.dll"
  SetOutPath "$INSTDIR\data\obs-plugins\${NAME}"
  File /r "${STAGE}\data\obs-plugins\${NAME}\*.*"
  WriteUninstaller "$INSTDIR\${UNINSTALLER}"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayName" "${DISPLAY}"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "Publisher" "obs-ai-background contributors"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\${UNINSTALLER}"'
  WriteRegStr HKLM "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\${UNINSTALLER}" /S'
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section "Uninstall"
  Delete "$INSTDIR\obs-plugins\64bit\${NAME}.dll"
  RMDir /r "$INSTDIR\data\obs-plugins\${NAME}"
  ; Only empty folders: OBS's own files stay.
  RMDir "$INSTDIR\obs-plugins\64bit"
  RMDir "$INSTDIR\obs-plugins"
  RMDir "$INSTDIR\data\obs-plugins"
  RMDir "$INSTDIR\data"
  DeleteRegKey HKLM "${UNINSTALL_KEY}"
  Delete "$INSTDIR\${UNINSTALLER}"
  RMDir "$INSTDIR"
SectionEnd
